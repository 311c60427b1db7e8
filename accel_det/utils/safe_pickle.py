"""Pickles read as plain data only: an allow-list unpickler.

Unpickling calls whatever globals the file names, so a pickle can run any code. Detectron2's
proposal files and its (Caffe2-era) ``.pkl`` weights hold only containers, numbers, strings and
numpy arrays; :func:`load_pickle` allows just the globals those need (as Python 2 and 3, numpy 1
and 2 write them) and refuses any other one, before it is called, with one line naming the file
and the global.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import functools
import importlib
import os
import pickle
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import AccelDetError, first_line

Global = Tuple[str, str]  # (module, name) as the pickle spells it


def _numpy_core(module: str):
    """numpy's ``_core.<module>`` (numpy 2; numpy 1.26 has it too), else ``core.<module>``,
    without importing the deprecated ``numpy.core`` alias on numpy 2."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


@functools.lru_cache(maxsize=None)
def allowed_globals() -> Dict[Global, Any]:
    """The allow-list: each global a proposal file or ``.pkl`` weights may name, and what it
    is."""
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: Dict[Global, Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        # protocol < 3 writes bytes as _codecs.encode(text, "latin1")
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in ("set", "frozenset", "bytearray", "complex", "slice", "range"):
        for module in ("builtins", "__builtin__"):  # Python 3, Python 2 (and protocol 2)
            allowed[module, name] = getattr(builtins, name)
    for core in ("numpy.core", "numpy._core"):  # numpy 1, numpy 2
        allowed[f"{core}.multiarray", "_reconstruct"] = multiarray._reconstruct
        allowed[f"{core}.multiarray", "scalar"] = multiarray.scalar
        allowed[f"{core}.numeric", "_frombuffer"] = numeric._frombuffer  # protocol 5 arrays
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose globals come only from an allow-list (plus ``extra``); any
    other global is an :class:`AccelDetError` naming ``path`` and the global."""

    def __init__(
        self,
        file,
        path: str,
        what: str = "pickle",
        extra: Optional[Mapping[Global, Any]] = None,
        **kwargs,
    ):
        super().__init__(file, **kwargs)
        self.allowed = {**allowed_globals(), **(extra or {})}
        self.path, self.what = path, what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[module, name]
        except KeyError:
            raise AccelDetError(
                f"refusing {self.what} {self.path}: it names the global {module}.{name}, which "
                f"is not plain data (containers, numbers, strings, numpy arrays); unpickling it "
                f"could run code"
            ) from None

    def persistent_load(self, pid):
        raise AccelDetError(
            f"refusing {self.what} {self.path}: it holds persistent ids (a torch file? load it "
            f"with torch.load)"
        )


def load_pickle(
    path: str,
    what: str = "pickle",
    extra: Optional[Mapping[Global, Any]] = None,
) -> Any:
    """The object in the pickle file ``path``, read with :class:`SafeUnpickler` (Python 2 strings
    as latin-1, as Detectron2 reads them). One-line :class:`AccelDetError` for a missing file, a
    refused global or a corrupt pickle; ``what`` names the file in them."""
    if not os.path.isfile(path):
        raise AccelDetError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path, what, extra, encoding="latin1").load()
    except AccelDetError:
        raise
    except Exception as error:  # corrupt pickles raise many types
        first = first_line(error)
        raise AccelDetError(f"cannot read {what} {path}: {first}") from None
