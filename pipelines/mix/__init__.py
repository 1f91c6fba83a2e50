"""Profile tiers and capped upsampling into a shuffled pretraining mixture (Dask DataFrame, out of core)."""
