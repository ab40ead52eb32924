"""HOW it runs: datasets, planning, execution on a device, and the DuckDB store."""
