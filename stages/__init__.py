"""Thin DVC stage entry points: parse a params.yaml section, call the library, write outputs."""
