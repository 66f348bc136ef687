"""Commit signature verification against the DID document's ``#atproto`` key.

    key = public_key(*signing_key(doc))          # from fleet.identity
    verify_commit(commit, key)                    # raises SignatureError

A repo commit is signed over the DAG-CBOR encoding of the commit without its ``sig`` field:
ECDSA over SHA-256, the signature as 64 bytes ``r || s`` (compact), with ``s`` in the lower
half of the curve order (the atproto "low-S" rule; the high-S twin of a valid signature is
refused, as @atproto/crypto does). Curves: secp256k1 (``ES256K``, multicodec 0xe7) and P-256
(``ES256``, multicodec 0x1200).

Key forms accepted (as @atproto/identity): ``Multikey`` = multibase(multicodec prefix +
compressed point); legacy ``EcdsaSecp256k1VerificationKey2019`` /
``EcdsaSecp256r1VerificationKey2019`` = multibase(raw point, compressed or not); and
``did:key:z...`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libipld
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SECP256K1_PREFIX = b"\xe7\x01"
P256_PREFIX = b"\x80\x24"

_ORDER = {
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
_CURVE = {"ES256K": ec.SECP256K1, "ES256": ec.SECP256R1}


class SignatureError(ValueError):
    """The commit signature is missing, malformed, high-S, or does not verify."""


class KeyError_(ValueError):
    """The key in the DID document cannot be used (unknown type, bad encoding)."""


@dataclass(frozen=True)
class PublicKey:
    alg: str  # "ES256K" or "ES256"
    key: ec.EllipticCurvePublicKey


def _multibase_bytes(mb: str) -> bytes:
    if not mb.startswith("z"):
        raise KeyError_("only base58btc (z...) multibase keys are supported")
    try:
        _base, data = libipld.decode_multibase(mb)
    except Exception as e:
        raise KeyError_(f"bad multibase: {e}") from None
    return bytes(data)


def _load(alg: str, point: bytes) -> PublicKey:
    try:
        return PublicKey(alg, ec.EllipticCurvePublicKey.from_encoded_point(_CURVE[alg](), point))
    except ValueError as e:
        raise KeyError_(f"bad {alg} public key: {e}") from None


def public_key(vm_type: str, multibase: str) -> PublicKey:
    """A key from a verification method's (type, publicKeyMultibase), or a ``did:key``."""
    if vm_type == "did:key" or multibase.startswith("did:key:"):
        multibase = multibase.removeprefix("did:key:")
        vm_type = "Multikey"
    raw = _multibase_bytes(multibase)
    if vm_type == "Multikey":
        if raw.startswith(SECP256K1_PREFIX):
            return _load("ES256K", raw[2:])
        if raw.startswith(P256_PREFIX):
            return _load("ES256", raw[2:])
        raise KeyError_("unsupported multikey codec")
    if vm_type == "EcdsaSecp256k1VerificationKey2019":
        return _load("ES256K", raw)
    if vm_type == "EcdsaSecp256r1VerificationKey2019":
        return _load("ES256", raw)
    raise KeyError_(f"unsupported verification method type {vm_type[:60]!r}")


def unsigned_commit_bytes(fields: dict[str, Any]) -> bytes:
    """DAG-CBOR bytes that the commit signature covers (the commit minus ``sig``)."""
    return libipld.encode_dag_cbor({k: v for k, v in fields.items() if k != "sig"})


def verify_signature(key: PublicKey, data: bytes, sig: bytes) -> None:
    """Raise :class:`SignatureError` unless ``sig`` (compact, low-S) signs ``data``."""
    if len(sig) != 64:
        raise SignatureError(f"signature is {len(sig)} bytes, expected 64")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    n = _ORDER[key.alg]
    if not (0 < r < n and 0 < s < n):
        raise SignatureError("signature out of range")
    if s > n // 2:
        raise SignatureError("high-S signature")
    try:
        key.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def verify_commit(fields: dict[str, Any], key: PublicKey) -> None:
    """Verify a decoded commit (``Commit.fields``) against ``key``."""
    sig = fields.get("sig")
    if not isinstance(sig, bytes):
        raise SignatureError("commit has no sig")
    verify_signature(key, unsigned_commit_bytes(fields), sig)
