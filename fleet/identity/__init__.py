"""Identity: DID documents (``did.py``). Handle verification lives with the indexing."""

from .did import DidError, DidResolver, did_method, handle_from_doc, pds_endpoint, signing_key

__all__ = ["DidError", "DidResolver", "did_method", "handle_from_doc", "pds_endpoint", "signing_key"]
