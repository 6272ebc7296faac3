"""reid: dense-semantics-aligned person re-identification (DSA-reID, SAN) as a DVC pipeline."""

__version__ = "0.1.0"
