"""Generated code for parley.v1."""
