"""Generated code for the parley package."""
