"""rsky fleet: index the AT Protocol network into the official AppView schema."""

__version__ = "0.1.0"
