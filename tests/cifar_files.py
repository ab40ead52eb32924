"""Synthetic CIFAR-10 python batches in the official layout, for tests.

:func:`py2_pickle` writes what Python 2's cPickle (protocol 2) wrote into Krizhevsky's files, opcode by
opcode: a dict (``}`` … ``u``) of ``str`` keys and values as SHORT_BINSTRING / BINSTRING (``U`` / ``T``,
read as bytes with ``encoding="bytes"``), int lists (``]`` … ``e``), and each numpy array as
``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` followed by BUILD with the state
``(1, shape, dtype('u1', 0, 1) + BUILD (3, '|', None, None, None, -1, -1, 0), False, raw bytes)``.
:func:`write_batches` lays out a ``cifar-10-batches-py`` folder of such files.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from biasbench.core.label_spaces.cifar10 import CLASS_NAMES

BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def _str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def _dtype(code: bytes, order: bytes) -> bytes:
    args = _str(code) + _int(0) + _int(1) + b"\x87R"  # TUPLE3, REDUCE
    state = b"(" + _int(3) + _str(order) + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"t"
    return b"cnumpy\ndtype\n" + args + state + b"b"


def _array(a: np.ndarray) -> bytes:
    assert a.dtype == np.uint8
    head = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _str(b"b") + b"\x87R"
    )
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    state = b"(" + _int(1) + shape + _dtype(b"u1", b"|") + b"\x89" + _str(a.tobytes()) + b"t"
    return head + state + b"b"


def _value(v: Any) -> bytes:
    if isinstance(v, np.ndarray):
        return _array(v)
    if isinstance(v, bytes):
        return _str(v)
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_value(x) for x in v) + b"e"
    raise TypeError(type(v))


def py2_pickle(d: dict[bytes, Any]) -> bytes:
    """``d`` as Python 2's cPickle.dump(d, f, 2) wrote it (see the module docstring)."""
    body = b"".join(_str(k) + _value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


def batch_dict(data: np.ndarray, labels: list[int], name: str) -> dict[bytes, Any]:
    n = data.shape[0]
    return {
        b"batch_label": f"{name} of 5".encode(),
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"{name}_img_{i:03d}.png".encode() for i in range(n)],
    }


def meta_dict(names: tuple[str, ...] = CLASS_NAMES) -> dict[bytes, Any]:
    return {b"num_cases_per_batch": 10000, b"label_names": [s.encode() for s in names], b"num_vis": 3072}


def random_batch(seed: int, n: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def write_batches(
    folder: Path, sizes: dict[str, int] | None = None, protocol: int | None = None
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A ``cifar-10-batches-py`` folder: ``batches.meta`` and the six batches (``sizes`` images each,
    default 3 per training batch and 4 in the test batch) in the Python 2 layout, or pickled by this
    Python at ``protocol``. Returns ``{batch: (data N x 3072, labels)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or {b: (4 if b == "test_batch" else 3) for b in BATCHES}

    def dump(d: dict[bytes, Any]) -> bytes:
        return py2_pickle(d) if protocol is None else pickle.dumps(d, protocol=protocol)

    (folder / "batches.meta").write_bytes(dump(meta_dict()))
    out = {}
    for i, b in enumerate(BATCHES):
        data, labels = random_batch(i, sizes[b])
        (folder / b).write_bytes(dump(batch_dict(data, labels, b)))
        out[b] = (data, labels)
    (folder / "readme.html").write_text("<html>synthetic</html>\n")
    return out
