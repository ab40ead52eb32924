"""Lock files: sha256 pins for registry entries whose weights must be pinned but are not.

A source that checks nothing about the bytes it serves (a URL, ``gdrive:``) must be pinned. Where the
registry cannot know the sha256 without downloading, ``bench lock <registry>`` downloads each unpinned
file once and records it here; ``bench run`` then verifies every download against the lock, refuses an
unpinned entry that the lock does not cover, and with ``--allow-unpinned`` records what it downloads
(trust on first use). The lock of ``dir/x.toml`` is ``dir/x.lock``; the lock of a shipped registry
(which lives inside the installed package) is ``./<name>.lock`` in the working directory, beside the
default results database. ``--lock FILE`` names another. The format (TOML, one table per file)::

    [[file]]
    id = "robust_resnet50_l2_eps3"
    part = 1                      # 1-based; parts of a multi-file checkpoint have 1, 2, …
    weights = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/resnet50_l2_eps3.ckpt"
    sha256 = "…"
    size = 102503711

An entry whose ``weights`` differ from the registry's is stale and ignored (the entry is unpinned again).
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from biasbench.registry import sources
from biasbench.registry.download import name_hash_prefix
from biasbench.registry.registry_files import FILES_DIR, RegistryError
from biasbench.registry.spec import CheckpointSpec, WeightPart

LOCK_SUFFIX = ".lock"


@dataclasses.dataclass(frozen=True)
class LockEntry:
    """One locked file: the checkpoint id, its part (from 1), its weights string, sha256 and size."""

    id: str
    part: int
    weights: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class Unpinned:
    """A file that must be pinned and is not: the checkpoint, its part (from 1) and the lock file that
    would pin it."""

    spec: CheckpointSpec
    part: int
    weights: str
    lock_file: Path


def lock_path(registry_file: str | Path, override: Path | None = None) -> Path:
    """The lock file of a registry file (see the module docstring)."""
    if override is not None:
        return Path(override)
    p = Path(registry_file)
    if p.resolve().parent == FILES_DIR:
        return Path.cwd() / f"{p.stem}{LOCK_SUFFIX}"
    return p.with_suffix(LOCK_SUFFIX)


def registry_label(spec: CheckpointSpec) -> str:
    """How to name a spec's registry on the command line: a shipped registry's name, else its path."""
    if spec.registry is None:
        return spec.id
    p = Path(spec.registry)
    return p.stem if p.resolve().parent == FILES_DIR else str(p)


def read_lock(path: Path) -> dict[tuple[str, int], LockEntry]:
    """The entries of a lock file by (id, part); a missing file is an empty lock."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = [
            LockEntry(**{k: f[k] for k in ("id", "part", "weights", "sha256", "size")}) for f in data["file"]
        ]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise RegistryError(f"lock file {path} is not a valid lock file ({type(e).__name__}: {e})") from e
    return {(e.id, int(e.part)): e for e in entries}


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=True)  # a JSON string of ASCII is a TOML basic string


def write_lock(path: Path, entries: dict[tuple[str, int], LockEntry]) -> None:
    """Write the lock file atomically, entries sorted by id and part."""
    lines = [
        "# Written by `bench lock`: the sha256 of each downloaded file that its registry does not pin.",
        "",
    ]
    for key in sorted(entries):
        e = entries[key]
        lines += [
            "[[file]]",
            f"id = {_toml_str(e.id)}",
            f"part = {int(e.part)}",
            f"weights = {_toml_str(e.weights)}",
            f'sha256 = "{e.sha256}"',
            f"size = {int(e.size)}",
            "",
        ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def spec_parts(spec: CheckpointSpec) -> list[WeightPart]:
    """The declared files of a checkpoint (no default weights are filled in: those are never unpinned);
    an ensemble declares none of its own (its members do)."""
    return spec.declared_parts()


def must_pin(part: WeightPart, checkpoint_id: str) -> bool:
    """Whether a part's source needs a pin it does not have in the registry."""
    if part.sha256:
        return False
    return sources.source_of(sources.parse_weights(part.weights, checkpoint_id)).requires_sha256


def _with_pins(spec: CheckpointSpec, pins: dict[int, str]) -> CheckpointSpec:
    if not pins:
        return spec
    if spec.parts:
        parts = tuple(
            dataclasses.replace(p, sha256=pins.get(n, p.sha256)) for n, p in enumerate(spec.parts, start=1)
        )
        return dataclasses.replace(spec, parts=parts)
    return dataclasses.replace(spec, sha256=pins[1])


def apply_locks(
    specs: list[CheckpointSpec], override: Path | None = None
) -> tuple[list[CheckpointSpec], list[Unpinned]]:
    """Pin every spec's unpinned parts from its registry's lock file; return the pinned specs and the
    parts that are still unpinned (no lock entry, or a stale one). An ensemble's members are pinned
    by their own ids, each file listed once."""
    locks: dict[Path, dict[tuple[str, int], LockEntry]] = {}
    out: list[CheckpointSpec] = []
    missing: list[Unpinned] = []
    for spec in specs:
        if spec.members:  # an ensemble: its members are pinned as checkpoints of their own
            members, member_missing = apply_locks(list(spec.members), override)
            out.append(dataclasses.replace(spec, members=tuple(members)))
            missing += member_missing
            continue
        pins: dict[int, str] = {}
        for n, part in enumerate(spec_parts(spec), start=1):
            if not must_pin(part, spec.id):
                continue
            lf = lock_path(spec.registry or spec.id, override)
            if lf not in locks:
                locks[lf] = read_lock(lf)
            entry = locks[lf].get((spec.id, n))
            if entry is not None and entry.weights == part.weights:
                pins[n] = entry.sha256
            else:
                missing.append(Unpinned(spec, n, part.weights, lf))
        out.append(_with_pins(spec, pins))
    # a member that is also an entry of its own is one file to lock, not two
    unique = list({(u.spec.id, u.part, u.lock_file): u for u in missing}.values())
    return out, unique


def refusal(missing: list[Unpinned]) -> str:
    """The message of ``bench run`` for unpinned files: which, and the two ways forward."""
    ids = list(dict.fromkeys(u.spec.id for u in missing))
    regs = " ".join(dict.fromkeys(registry_label(u.spec) for u in missing))
    locks = ", ".join(dict.fromkeys(str(u.lock_file) for u in missing))
    shown = ", ".join(ids[:8]) + (f", … ({len(ids)} in all)" if len(ids) > 8 else "")
    return (
        f"{len(missing)} weight file(s) of {len(ids)} checkpoint(s) are not pinned: no sha256 in the registry "
        f"and none in its lock file ({locks}): {shown}. Run `bench lock {regs}` to download them once and "
        f"record their sha256, or pass --allow-unpinned to record the hashes this run downloads"
    )


def _observe(u: Unpinned, cache_dir: Path) -> tuple[str, Path]:
    src = sources.parse_weights(u.weights, u.spec.id)
    path = sources.source_of(src).observe(src.value, u.spec.id, cache_dir=cache_dir)
    digest = sources.cached_sha256(path, cache_dir)
    name = urllib.parse.urlsplit(u.weights).path.rsplit("/", 1)[-1]
    prefix = name_hash_prefix(name)
    if prefix and not digest.startswith(prefix):
        raise RegistryError(
            f"checkpoint {u.spec.id!r}: the sha256 of {u.weights} is {digest}, which does not start with "
            f"the prefix {prefix} in its file name; not locked"
        )
    return digest, path


def lock_each(
    missing: list[Unpinned],
    cache_dir: Path,
    on_file: Callable[[LockEntry, Path], None] | None = None,
    on_error: Callable[[Unpinned, Exception], None] | None = None,
) -> tuple[list[LockEntry], list[tuple[Unpinned, Exception]]]:
    """:func:`lock_files`, going on past a file that fails (``bench lock``: every entry is tried and
    reported); returns what was locked and what failed, with its error."""
    recorded: list[LockEntry] = []
    failed: list[tuple[Unpinned, Exception]] = []
    for u in missing:
        try:
            recorded += lock_files([u], cache_dir, on_file)
        except RuntimeError as e:  # CheckpointError / RegistryError: this file only
            failed.append((u, e))
            if on_error is not None:
                on_error(u, e)
    return recorded, failed


def lock_files(
    missing: list[Unpinned], cache_dir: Path, on_file: Callable[[LockEntry, Path], None] | None = None
) -> list[LockEntry]:
    """Download each unpinned file once (through its source's :meth:`~sources.Source.observe`), hash
    it and record it in its lock file; the lock is rewritten after every file, so an interrupted run
    keeps what it got. A file name carrying a hash prefix (``…-c8e5653e.pth.tar``) is checked
    against it (a check, not a pin): a file that does not match is refused, not locked."""
    recorded: list[LockEntry] = []
    for u in missing:
        digest, path = _observe(u, Path(cache_dir))
        entry = LockEntry(u.spec.id, u.part, u.weights, digest, path.stat().st_size)
        lock = read_lock(u.lock_file)
        lock[(entry.id, entry.part)] = entry
        write_lock(u.lock_file, lock)
        recorded.append(entry)
        if on_file is not None:
            on_file(entry, u.lock_file)
    return recorded


def pin_status(spec: CheckpointSpec, override: Path | None = None) -> str:
    """How a checkpoint's bytes are pinned, for listings: ``sha256`` (in the registry), ``locked``,
    ``UNPINNED`` (needs ``bench lock``), ``local``, or what the source itself checks; parts joined
    by ``+`` (``UNPINNED+UNPINNED``); an ensemble: its members', joined by ``+``."""
    if spec.members:
        return "+".join(pin_status(m, override) for m in spec.members)
    _, missing = apply_locks([spec], override)
    unpinned = {u.part for u in missing}
    words = []
    for n, part in enumerate(spec_parts(spec) or [WeightPart("")], start=1):
        if not part.weights:
            words.append("arch default")
        elif part.sha256:
            words.append("sha256")
        elif n in unpinned:
            words.append("UNPINNED")
        elif must_pin(part, spec.id):
            words.append("locked")
        else:
            source = sources.source_of(sources.parse_weights(part.weights, spec.id))
            words.append("local" if source.local else (source.self_check or "unpinned"))
    return "+".join(words)


def source_kind(spec: CheckpointSpec) -> str:
    """The weight sources of a checkpoint by scheme (``https``, ``gdrive``, ``timm``; parts joined by ``+``,
    ``https+https``; an ensemble: its members', ``zoo+zoo+zoo``)."""
    if spec.members:
        return "+".join(source_kind(m) for m in spec.members)
    kinds = []
    for part in spec_parts(spec):
        src = sources.parse_weights(part.weights, spec.id)
        kinds.append(sources.source_of(src).scheme)
    return "+".join(kinds) or "arch default"
