"""The weight sources this package ships, one module each (entry-point group ``biasbench.sources``)."""
