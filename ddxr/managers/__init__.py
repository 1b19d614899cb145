"""The three managers of the component design: relationships, evaluations, progression (pandas/numpy only)."""
