"""Datasets: the registry by name, folder loaders, the synthetic demo world, stimuli, downloads."""
