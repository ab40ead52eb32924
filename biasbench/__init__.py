"""biasbench: benchmark image-classifier checkpoints for their biases and their generalization."""

__version__ = "0.1.0"
