"""reID models (SPEC §8)."""
