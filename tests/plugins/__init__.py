"""Metric plugins used only by tests (loaded through $BIASBENCH_METRICS or a throwaway package)."""
