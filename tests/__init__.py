"""biasbench tests."""
