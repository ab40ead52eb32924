"""The architecture families biasbench ships (entry-point group ``biasbench.architectures``)."""
