"""wmmt_jax evaluation: proposals, metrics and result files (numpy only)."""
