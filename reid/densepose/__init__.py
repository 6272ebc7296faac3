"""Dense semantics (DensePose-style IUV) estimation: one interface, several backends (SPEC §5)."""
