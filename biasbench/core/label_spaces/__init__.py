"""The label spaces this package ships (entry-point group ``biasbench.labels``)."""
