"""The three status vocabularies, as string enums (a member equals its string: ``PlanStatus.TODO ==
"todo"``, and it is stored and printed as that string).

* :class:`PlanStatus` — a planned job: ``todo`` (to compute), ``stored`` (already in the database),
  ``n/a`` (the metric does not apply to the checkpoint), ``error`` (cannot run; recorded as a failure).
* :class:`Outcome` — what a run did with a job: ``done``, ``failed``, ``stored``, ``n/a``.
* :class:`RunStatus` — a ``runs`` row: ``running`` → ``ok`` | ``failed`` | ``interrupted`` (the process
  died or was killed while the row said running).
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


__all__ = ["Outcome", "PlanStatus", "RunStatus"]


class PlanStatus(StrEnum):
    TODO = "todo"
    STORED = "stored"
    NOT_APPLICABLE = "n/a"
    ERROR = "error"


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    STORED = "stored"
    NOT_APPLICABLE = "n/a"


class RunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
