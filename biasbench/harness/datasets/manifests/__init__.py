"""Dataset manifests (package data): one JSON file per downloadable dataset; see ``fetch.py``."""
