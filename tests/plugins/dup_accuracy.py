"""A plugin that reuses the name of an in-tree metric (discovery must refuse it)."""

from biasbench.metrics.accuracy import Accuracy


class Accuracy2(Accuracy):
    """Same name as ours."""

    name = "accuracy"
