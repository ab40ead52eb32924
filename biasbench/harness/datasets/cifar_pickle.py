"""Read the official CIFAR python batches (``cifar-10-batches-py``) without unpickling arbitrary objects.

The format (Krizhevsky's ``data_batch_1`` … ``data_batch_5``, ``test_batch``, ``batches.meta``): each
file is a pickle (written by Python 2's cPickle, protocol 2) of one dict with bytes keys —
``b'data'`` a numpy uint8 array N x 3072 (each row the R, G, B planes of a 32 x 32 image, each plane
row-major), ``b'labels'`` a list of N ints, ``b'batch_label'`` bytes, ``b'filenames'`` a list of N
bytes; ``batches.meta`` holds ``b'label_names'`` (10 bytes), ``b'num_cases_per_batch'`` and
``b'num_vis'``. Loaded with ``encoding="bytes"``, as the dataset's own page does.

Why a restricted :class:`pickle.Unpickler` and not an opcode-level parser of our own. A pickle can
only run code by naming a global (opcodes GLOBAL, STACK_GLOBAL, INST, OBJ, and the extension codes
EXT1/2/4, which all resolve through :meth:`pickle.Unpickler.find_class`) and then calling it
(REDUCE, NEWOBJ, BUILD's ``__setstate__``) — or through ``persistent_load``, which a plain
``Unpickler`` refuses. Overriding ``find_class`` is the one hook the standard library documents for
"restricting globals", and it sees every global the file names before anything is called, so the
parser stays CPython's own (fast, exact about every opcode of every protocol) and our code is a short
allow-list. A hand-written parser would reimplement ~70 opcodes and be the larger attack surface.

The allow-list is what a numpy array's pickle names, mapped to stand-ins of ours — not to numpy's
functions, whose ``__setstate__`` would trust fields of the file (a dtype's state carries its flags,
and forged "holds objects" flags would make numpy treat file bytes as object pointers):

* ``numpy.core.multiarray._reconstruct`` (NumPy 1, and the name Python 2 wrote into the real files)
  and ``numpy._core.multiarray._reconstruct`` (NumPy 2) -> :func:`_reconstruct`, which returns an
  :class:`_ArrayStandIn`; the array's state (shape, dtype, Fortran flag, bytes) arrives with BUILD,
  is checked (a plain dtype, a shape of non-negative ints, exactly ``prod(shape) · itemsize`` bytes)
  and becomes ``np.frombuffer`` with a dtype built afresh from its type code;
* ``numpy.ndarray`` -> a marker that :func:`_reconstruct` accepts as its subtype and that cannot be
  called (so a pickle cannot allocate an array of a size of its choice);
* ``numpy.dtype`` -> :func:`_dtype`: a :class:`_DtypeStandIn` for the plain numeric type codes of
  :data:`DTYPES` only (never ``object``, never structured), whose BUILD state may set the byte order
  and nothing else.

So nothing from the file reaches numpy except bytes and a type code. Every other global
(``os.system``, ``builtins.eval``, ``_codecs.encode`` that Python 3 writes for bytes at protocol 2,
``numpy._core.numeric._frombuffer`` of protocol 5 …) is refused with :class:`UnsafePickle` before it
is imported or called. After loading, the result is checked field by field (:func:`read_batch`,
:func:`read_meta`): a dict with bytes keys, ``data`` a uint8 N x 3072 array, ``labels`` N ints in
0 … 9, ``filenames`` N bytes; anything else is an :class:`~biasbench.core.errors.InputError` naming
the file and the field. Files larger than :data:`MAX_FILE_BYTES` are refused before they are read.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from biasbench.core.errors import InputError

#: CIFAR images: 32 x 32 RGB, stored as 3072 bytes per row (R plane, G plane, B plane).
SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE
#: A real data batch is 31 MB (10,000 images); anything far larger is not a CIFAR batch.
MAX_FILE_BYTES = 256 * 2**20
#: the numpy type codes a CIFAR batch's arrays may have (the images are ``u1``; the others because a
#: batch re-pickled from numpy may store its labels as an int array)
DTYPES = frozenset({"u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8"})
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


class UnsafePickle(InputError):
    """A pickle names a global outside the allow-list, or an array or dtype that a CIFAR batch never
    holds: refused, nothing of it imported or called."""


class _Sealed:
    """What an allowed global resolves to: BUILD on it (setting its attributes) is refused, so a pickle
    cannot alter the objects that rebuild the others."""

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickle(f"the pickle sets the state of the global {self!r}; refused")


class _NdarrayMarker(_Sealed):
    """Stands for ``numpy.ndarray`` in a pickle: accepted as ``_reconstruct``'s subtype, not callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


class _Function(_Sealed):
    """An allowed global function (one of ours), callable with positional arguments only."""

    def __init__(self, fn: Any, name: str) -> None:
        self._fn, self._name = fn, name

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __repr__(self) -> str:
        return self._name


_NDARRAY = _NdarrayMarker()


def _text(v: Any) -> Any:
    return v.decode("ascii", "replace") if isinstance(v, bytes) else v


class _DtypeStandIn:
    """A plain numeric dtype named in a pickle: its type code, and the byte order its BUILD state sets."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.order = "|" if code.endswith("1") else "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags);
        # a plain dtype has no subarray, names or fields, and its flags are not taken from the file
        if not (isinstance(state, tuple) and len(state) >= 5 and all(v is None for v in state[2:5])):
            raise UnsafePickle(f"dtype {self.code!r} with state {state!r:.80}: only plain dtypes are read")
        order = _text(state[1])
        if order not in _BYTE_ORDERS:
            raise UnsafePickle(f"dtype {self.code!r}: unknown byte order {state[1]!r:.20}")
        self.order = order

    def dtype(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order) if self.order in "<>" else np.dtype(self.code)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> _DtypeStandIn:
    """``numpy.dtype(spec)`` in a pickle, for the plain numeric type codes of :data:`DTYPES` only."""
    code = _text(spec)
    if not isinstance(code, str) or code not in DTYPES:
        raise UnsafePickle(f"dtype {spec!r:.40} is not one of the plain numeric dtypes a CIFAR batch holds")
    return _DtypeStandIn(code)


class _ArrayStandIn:
    """A numpy array being unpickled: ``array`` is set by its BUILD state (checked, see the module doc)."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy's ndarray state: (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickle(
                f"array state {type(state).__name__} of length {len(state) if isinstance(state, tuple) else '?'}: not a plain numpy array"
            )
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStandIn):
            raise UnsafePickle(f"array of dtype {dtype!r:.40}: only plain numeric dtypes are read")
        if not (isinstance(shape, tuple) and all(isinstance(v, int) and v >= 0 for v in shape)):
            raise UnsafePickle(f"array shape {shape!r:.40} is not a tuple of non-negative ints")
        if not isinstance(raw, (bytes, bytearray)) or not isinstance(fortran, bool):
            raise UnsafePickle("array data must be bytes with a bool Fortran flag")
        dt = dtype.dtype()
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != n * dt.itemsize:
            raise UnsafePickle(
                f"array of shape {shape} {dt} needs {n * dt.itemsize} bytes, the pickle holds {len(raw)}"
            )
        self.array = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if fortran else "C")


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> _ArrayStandIn:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')`` of a plain array, whose state follows with BUILD."""
    if subtype is not _NDARRAY or shape != (0,):
        raise UnsafePickle(
            f"array reconstruction of {subtype!r:.40} with shape {shape!r:.40}: only a plain numpy.ndarray is read"
        )
    return _ArrayStandIn()


def _resolved(v: Any, where: str) -> Any:
    """A value of the unpickled dict with its arrays in place of their stand-ins (one list level deep:
    a CIFAR batch holds arrays, lists of ints or bytes, and bytes)."""
    if isinstance(v, _ArrayStandIn):
        if v.array is None:
            raise UnsafePickle(f"{where}: an array without its state")
        return v.array
    if isinstance(v, _DtypeStandIn):
        raise UnsafePickle(f"{where}: a bare dtype where a CIFAR batch holds data")
    if isinstance(v, list):
        return [_resolved(x, where) if isinstance(x, (_ArrayStandIn, _DtypeStandIn)) else x for x in v]
    return v


#: (module, name) -> the object a CIFAR pickle may name
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _Function(_reconstruct, "numpy.core.multiarray._reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _Function(
        _reconstruct, "numpy._core.multiarray._reconstruct"
    ),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Function(_dtype, "numpy.dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals are :data:`ALLOWED` and nothing else (see the module docstring)."""

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file, encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(
                f"{self.where}: the pickle names the global {module}.{name}, which a CIFAR batch never "
                f"holds (allowed: {', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED))}); refused without "
                "importing or calling it"
            ) from None


def load_restricted(path: Path) -> dict[bytes, Any]:
    """The dict pickled in ``path``, read by :class:`RestrictedUnpickler`. A file that is not such a
    pickle, names a refused global, or is larger than :data:`MAX_FILE_BYTES` is an
    :class:`~biasbench.core.errors.InputError` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path}: {size} bytes, larger than any CIFAR batch ({MAX_FILE_BYTES}); refused")
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read CIFAR batch {path}: {e}") from e
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), str(path)).load()
    except UnsafePickle as e:  # a refused global (names the file already), dtype or array
        raise e if str(e).startswith(str(path)) else UnsafePickle(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - every way a malformed pickle fails (UnpicklingError, EOFError, TypeError, ValueError …)
        raise InputError(f"{path} is not a readable CIFAR batch pickle: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, bytes) for k in obj):
        raise InputError(f"{path}: expected a pickled dict with bytes keys, got {type(obj).__name__}")
    return {k: _resolved(v, f"{path}: {k!r}") for k, v in obj.items()}


def _field(d: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in d:
        raise InputError(f"{path}: no {key!r} (keys: {sorted(d)})")
    return d[key]


def _int_list(value: Any, what: str, path: Path) -> list[int]:
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        return [int(v) for v in value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise InputError(f"{path}: {what} must be a list of ints, got {type(value).__name__}")


def _bytes_list(value: Any, what: str, path: Path) -> list[bytes]:
    if isinstance(value, list) and all(isinstance(v, bytes) for v in value):
        return list(value)
    raise InputError(f"{path}: {what} must be a list of bytes, got {type(value).__name__}")


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, list[int], list[str]]:
    """One data or test batch: images uint8 (N, 3, 32, 32), labels (N ints in 0 … ``num_classes`` − 1)
    and file names. Row ``i`` of ``b'data'`` is image ``i``: bytes 0 … 1023 its red plane, 1024 …
    2047 green, 2048 … 3071 blue, each plane row by row."""
    d = load_restricted(path)
    data = _field(d, b"data", path)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != ROW_BYTES
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputError(f"{path}: b'data' must be a uint8 array N x {ROW_BYTES}, got {got}")
    n = data.shape[0]
    labels = _int_list(_field(d, b"labels", path), "b'labels'", path)
    names = _bytes_list(_field(d, b"filenames", path), "b'filenames'", path)
    if len(labels) != n or len(names) != n:
        raise InputError(f"{path}: {n} images but {len(labels)} labels and {len(names)} file names")
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise InputError(f"{path}: label {bad[0]} outside 0..{num_classes - 1}")
    images = np.array(data, order="C").reshape(n, 3, SIDE, SIDE)  # a writable copy
    return images, labels, [s.decode("utf-8", "replace") for s in names]


def read_meta(path: Path) -> list[str]:
    """``batches.meta``'s class names (``b'label_names'``), in label order."""
    d = load_restricted(path)
    return [
        s.decode("utf-8", "replace")
        for s in _bytes_list(_field(d, b"label_names", path), "b'label_names'", path)
    ]
