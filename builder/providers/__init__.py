"""Stack providers: where a target's toolchain comes from (standalone image, or the real stack)."""
