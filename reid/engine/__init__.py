"""Training engine (SPEC §9)."""
