"""Per-notebook parameter schemas and profiles (one module per notebook, see xcal_core.params)."""
