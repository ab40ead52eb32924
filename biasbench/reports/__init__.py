"""WHAT it means: aggregates, correlations with uncertainty, tables and figures from the store."""
