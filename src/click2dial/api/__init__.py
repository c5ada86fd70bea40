"""The integrators' HTTP API (SPEC §2)."""
