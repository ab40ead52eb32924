"""Shared foundations below ``metrics`` and ``registry``: label spaces, image sets, preprocessing,
the plugin-registry helper, hashing, paths, the synthetic demo world and its corruptions.

Modules here import only each other (and third-party libraries); see ``docs/architecture.md``.
"""
