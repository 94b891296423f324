"""LEAD's lzma pickles (`metas/NNNN.pkl`, `bboxes/NNNN.pkl`) → Python objects, through an unpickler that
resolves only builtin containers and numpy reconstructors (a pickle naming any other global is refused)."""

from __future__ import annotations

import io
import lzma
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream.core.errors import LeadFormatError

# Globals a LEAD pickle may reference: numpy arrays / scalars / dtypes and plain containers, nothing else.
_SAFE_BUILTINS = frozenset(
    {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
    }
)
_SAFE_NUMPY_NAMES = frozenset({"_reconstruct", "scalar", "_frombuffer", "dtype", "ndarray"})
_SAFE_OTHER = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        ("_codecs", "encode"),
        ("copyreg", "_reconstructor"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only builtins containers and numpy array/scalar/dtype reconstructors."""

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # protocol <= 2
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # pickles from numpy 1.x, read on numpy 2
        allowed = (
            (module == "builtins" and name in _SAFE_BUILTINS)
            or (module.split(".")[0] == "numpy" and name in _SAFE_NUMPY_NAMES)
            or module == "numpy.dtypes"
            or (module, name) in _SAFE_OTHER
        )
        if not allowed:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only builtins and numpy are allowed)"
            )
        return super().find_class(module, name)


def read_lzma_pickle(path: Path | str) -> Any:
    """Load one LEAD pickle file (xz/lzma container around a standard pickle).

    Raises:
        LeadFormatError: the file is missing, truncated, not xz, or not a pickle of builtins + numpy.
    """
    try:
        with open(path, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise LeadFormatError(path, "file is missing") from None
    return loads_lzma_pickle(payload, path)


def loads_lzma_pickle(payload: bytes, path: Path | str) -> Any:
    """`read_lzma_pickle` of bytes already read (`path` names the file in errors).

    Raises:
        LeadFormatError: truncated, not xz, or not a pickle of builtins + numpy.
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(lzma.decompress(payload, format=lzma.FORMAT_AUTO))).load()
    except (lzma.LZMAError, EOFError) as exc:
        problem = f"truncated or corrupt lzma pickle ({type(exc).__name__}: {exc})"
        raise LeadFormatError(path, problem) from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
    ) as exc:
        problem = f"corrupt pickle inside the lzma container ({type(exc).__name__}: {exc})"
        raise LeadFormatError(path, problem) from None
