"""The download specs of the datasets we ship (package data): one JSON file per download, read by
:func:`biasbench.harness.datasets.download_spec.shipped_download` for the dataset entries that declare
it (``DatasetEntry.download``); see ``download_spec.py`` for the format."""
