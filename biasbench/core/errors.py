"""One error hierarchy: every error biasbench raises on purpose derives from :class:`BiasbenchError`.

Each class names the exit code a command line should end with (:attr:`BiasbenchError.exit_code`);
``bench`` catches :class:`BiasbenchError` once, prints ``error: <message>`` (control characters as
escapes, no traceback) and exits with that code:

* ``2`` — nothing was done: the input is wrong (:class:`InputError`, a ``ValueError``), something named
  does not exist (:class:`NotFoundError`, a ``FileNotFoundError``; :class:`UnknownNameError`, a
  ``KeyError``), or something we depend on cannot be used (:class:`StateError`, a ``RuntimeError``: a
  database, a plugin, a download, a checkpoint);
* ``1`` — the work ran and part of it failed; the rest is kept (:class:`WorkFailed`).

Each family also derives from the built-in exception it refines, so ``except ValueError`` around our
code keeps working. The specific errors live beside the code that raises them (``StoreError`` in the
store, ``PluginError`` in the plugin registry, ``ParamError`` with the metrics, …).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BiasbenchError",
    "InputError",
    "MissingExtra",
    "NotFoundError",
    "StateError",
    "UnknownNameError",
    "WorkFailed",
]


class BiasbenchError(Exception):
    """An error of biasbench's; ``exit_code`` is what ``bench`` exits with when it ends a command."""

    exit_code: ClassVar[int] = 2


class InputError(BiasbenchError, ValueError):
    """What was given is wrong (an option, a parameter, a file's content): nothing was done."""


class NotFoundError(BiasbenchError, FileNotFoundError):
    """A file, folder or database that was named does not exist: nothing was done."""


class UnknownNameError(BiasbenchError, KeyError):
    """A name (a recipe, a split, a corruption, a dataset) is unknown; the message lists known ones."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return str(self.args[0]) if self.args else ""


class StateError(BiasbenchError, RuntimeError):
    """Something biasbench depends on cannot be used (a database, a plugin, a download, a checkpoint,
    the device): nothing more was done."""


class MissingExtra(StateError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class WorkFailed(BiasbenchError):
    """The work ran and part of it failed (named in the message or above it); the rest is kept."""

    exit_code: ClassVar[int] = 1
