"""Readers of raw inputs: DataDecide evaluations and W&B stores. Knows nothing of xarray."""
