"""The names that reach file names, SQL rows and terminals: checkpoint ids, metric names and result
keys. One rule each, used wherever such a name comes in from outside (a registry file, a
command line, an imported table, a merged shard).

* checkpoint id: at most :data:`MAX_ID_LENGTH` (128) characters of ``A-Z a-z 0-9 _ . + - = @``, not
  starting with ``.``, ``+``, ``-``, ``=`` or ``@`` (an id names per-item files; no slashes, no spaces,
  no control characters; a leading ``=``/``+``/``-``/``@`` would be a spreadsheet formula);
* metric name: a letter, then letters, digits, ``_`` or ``-``; at most 64 characters (a metric names a
  folder of per-item files);
* result key: 1–200 printable characters, no control characters.

Each ``*_problem`` function returns ``None`` for a valid name, else a short phrase saying what is wrong.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
MAX_METRIC_NAME_LENGTH = 64
MAX_KEY_LENGTH = 200

# always used with fullmatch: ``$`` would also match before a trailing newline
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-=@]*")
METRIC_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: a sha256 hex digest, lower case (always ``fullmatch``: ``$`` would also match before a trailing newline)
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def id_problem(cid: object) -> str | None:
    """What is wrong with a checkpoint id (``None``: nothing)."""
    if not isinstance(cid, str) or not cid:
        return "an id must be a non-empty string"
    if len(cid) > MAX_ID_LENGTH:
        return (
            f"it is {len(cid)} characters long; at most {MAX_ID_LENGTH} (an id names per-item result files)"
        )
    if not ID_RE.fullmatch(cid):
        return "letters, digits and _ . + - = @ only, not starting with . + - = @ (no spaces or slashes)"
    return None


def metric_name_problem(name: object) -> str | None:
    """What is wrong with a metric name (``None``: nothing)."""
    if not isinstance(name, str) or not name:
        return "a metric name must be a non-empty string"
    if len(name) > MAX_METRIC_NAME_LENGTH:
        return f"it is {len(name)} characters long; at most {MAX_METRIC_NAME_LENGTH}"
    if not METRIC_NAME_RE.fullmatch(name):
        return "a letter, then letters, digits, _ or - only"
    return None


def key_problem(key: object) -> str | None:
    """What is wrong with a result key (``None``: nothing)."""
    if not isinstance(key, str) or not key:
        return "a result key must be a non-empty string"
    if len(key) > MAX_KEY_LENGTH:
        return f"it is {len(key)} characters long; at most {MAX_KEY_LENGTH}"
    if CONTROL_RE.search(key):
        return "it contains control characters"
    return None


def printable(text: object, limit: int | None = None) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes included) shown as ``\\xNN``
    escapes, optionally cut to ``limit`` characters."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return CONTROL_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


def printable_lines(text: object) -> str:
    """:func:`printable` that keeps line breaks (a message of several lines stays one per line)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))
