"""WHAT is benchmarked: checkpoints as data — specs, weight sources, state-dict adapters, and the
registry files we ship."""
