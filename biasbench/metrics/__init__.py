"""WHAT is measured: one plugin per module (accuracy, shape_bias, spectral, critical_band, sis) and
the plugin protocol (``base``) with its entry-point discovery (``discovery``)."""
