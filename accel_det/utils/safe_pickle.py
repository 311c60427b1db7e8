"""Pickles read as plain data only: a restricted unpickler.

Unpickling calls whatever globals the file names, so a pickle can run any code; and the numpy
callables plain data needs (``_reconstruct``, ``scalar``, ``dtype``'s state) turn attacker bytes
into native memory layouts (object pointers, offsets, strides) if called with attacker arguments.
Detectron2's proposal files and its (Caffe2-era) ``.pkl`` weights hold only dicts, lists, tuples,
numbers, strings and numpy arrays of numbers, so :class:`SafeUnpickler`:

* runs on the pure-Python unpickler (``pickle._Unpickler``), with the opcodes that build objects
  narrowed: ``BUILD`` only completes an array or a dtype this unpickler made, items go only into
  lists and dicts, no sets, no ``INST``/``OBJ``/``NEWOBJ``, no extension registry, no persistent
  ids;
* resolves globals from an allow-list of its own reconstructors (as Python 2 and 3, numpy 1 and 2
  spell them): numpy arrays, scalars and dtypes are rebuilt from a plain numeric dtype string
  (booleans, integers, floats, complex, fixed-size strings), a shape and a bytes buffer of exactly
  the right length; object dtypes, record fields, sub-arrays, offsets, strides and dtype flags
  never reach numpy;
* bounds what a file may make: opcodes and array bytes (:data:`BUDGET_BASE` plus
  :data:`BUDGET_PER_BYTE` times the file's size), nesting depth (:data:`MAX_DEPTH`; a nested
  tuple is refused as it is built, before anything hashes it), and reads past the end.

Anything else is an :class:`AccelDetError` naming the file, before it is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import AccelDetError, first_line

Global = Tuple[str, str]  # (module, name) as the pickle spells it

MAX_DEPTH = 64  # containers inside containers (Detectron2's files: 3)
OPCODE_COST = 64  # bytes an opcode may make (an object and its place on the stack)
BUDGET_BASE = 64 << 20  # bytes any file may make ...
BUDGET_PER_BYTE = 32  # ... plus this many per byte of the file
MAX_NDIM = 32
MAX_DIM = 1 << 48
# plain dtypes: bool, (unsigned) integers, floats, complex, fixed-size byte and unicode strings
PLAIN_DTYPE = re.compile(r"b1|[iu][1248]|f[248]|c(8|16)|[SU][1-9][0-9]{0,8}")
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")

# the opcodes that make objects Detectron2's files never hold, or call code by other routes
REFUSED_OPCODES = {
    pickle.INST: "an old-style class instance (INST)",
    pickle.OBJ: "an old-style class instance (OBJ)",
    pickle.NEWOBJ: "an object built by its class (NEWOBJ)",
    pickle.NEWOBJ_EX: "an object built by its class (NEWOBJ_EX)",
    pickle.EXT1: "an extension-registry reference (EXT1)",
    pickle.EXT2: "an extension-registry reference (EXT2)",
    pickle.EXT4: "an extension-registry reference (EXT4)",
    pickle.EMPTY_SET: "a set",
    pickle.ADDITEMS: "a set",
    pickle.FROZENSET: "a frozenset",
}


class _NDArrayClass:
    """What ``numpy.ndarray`` resolves to: an argument of ``_reconstruct``, never callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


NDARRAY = _NDArrayClass()


def _numpy_spellings(module: str, name: str):
    """Both modules numpy writes a core global under (numpy 1: ``numpy.core``, 2: ``_core``)."""
    return [(f"numpy.core.{module}", name), (f"numpy._core.{module}", name)]


def allowed_globals() -> Dict[Global, str]:
    """The allow-list: each global a proposal file or ``.pkl`` weights may name, and the method of
    :class:`SafeUnpickler` it resolves to (its own reconstructor, not the named callable; ``""``:
    :data:`NDARRAY`)."""
    allowed: Dict[Global, str] = {
        ("collections", "OrderedDict"): "ordered_dict",
        ("_codecs", "encode"): "encode",  # protocol < 3 writes bytes as encode(text, "latin1")
        ("numpy", "ndarray"): "",  # an argument of _reconstruct: :data:`NDARRAY`, not callable
        ("numpy", "dtype"): "dtype",
    }
    for module in ("builtins", "__builtin__"):  # Python 3, Python 2 (and protocol < 3)
        allowed[module, "complex"] = "complex"
        allowed[module, "bytes"] = "empty_bytes"  # protocol < 3 writes b"" as bytes()
    for key in _numpy_spellings("multiarray", "_reconstruct"):
        allowed[key] = "reconstruct"
    for key in _numpy_spellings("multiarray", "scalar"):
        allowed[key] = "scalar"
    for key in _numpy_spellings("numeric", "_frombuffer"):  # protocol 5 arrays
        allowed[key] = "frombuffer"
    return allowed


class _BoundedReader:
    """The file as the unpickler reads it: a read of more bytes than are left is an error (before
    anything that size is allocated), not a short read."""

    def __init__(self, file, size: int):
        self.file, self.left = file, size

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise pickle.UnpicklingError(
                f"the file ends early (it needs {n} more bytes, {self.left} are left)"
            )
        data = self.file.read(n)
        self.left -= len(data)
        if len(data) < n:
            raise pickle.UnpicklingError("the file is shorter than it says")
        return data

    def readline(self) -> bytes:
        line = self.file.readline()
        self.left -= len(line)
        return line


def _size_left(file) -> int:
    try:
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return sys.maxsize


class SafeUnpickler(pickle._Unpickler):
    """An unpickler of plain data (see the module's docstring): globals come only from the
    allow-list (plus ``extra``, callables the caller trusts); anything else is an
    :class:`AccelDetError` naming ``path``, raised before it is called."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        file,
        path: str,
        what: str = "pickle",
        extra: Optional[Mapping[Global, Any]] = None,
        **kwargs,
    ):
        size = _size_left(file)
        super().__init__(_BoundedReader(file, size), **kwargs)
        self.path, self.what = path, what
        self.budget = BUDGET_BASE + BUDGET_PER_BYTE * min(size, sys.maxsize // BUDGET_PER_BYTE)
        self.spent = 0
        self.allowed: Dict[Global, Callable] = {
            key: getattr(self, method) if method else NDARRAY
            for key, method in allowed_globals().items()
        }
        self.allowed.update(extra or {})
        self.callables = {id(f): f for f in self.allowed.values() if f is not NDARRAY}
        self.unbuilt: Dict[int, np.ndarray] = {}  # arrays made by _reconstruct, before BUILD
        self.tuple_depth: Dict[int, Tuple[tuple, int]] = {}

    # --------------------------------------------------------------------------- the one error
    def refuse(self, what: str) -> AccelDetError:
        return AccelDetError(
            f"refusing {self.what} {self.path}: it holds {what}, which is not plain data "
            f"(containers, numbers, strings, numpy arrays of numbers); unpickling it could run "
            f"code or corrupt memory"
        )

    def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.budget:
            raise AccelDetError(
                f"refusing {self.what} {self.path}: it would make more than "
                f"{self.budget >> 20} MiB of objects from a file of its size (a corrupt or "
                f"hostile pickle)"
            )

    # --------------------------------------------------------------------------- the loop
    def load(self) -> Any:
        """The object in the file, checked: nesting at most :data:`MAX_DEPTH` deep, no cycles."""
        dispatch, refused = self.dispatch, REFUSED_OPCODES
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack, self.stack = [], []
        self.append = self.stack.append
        self.proto = 0
        try:
            while True:
                key = read(1)
                if key in refused:
                    raise self.refuse(refused[key])
                self.spend(OPCODE_COST)
                if key[0] not in dispatch:
                    raise pickle.UnpicklingError(f"invalid opcode {key!r}")
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            value = stop.value
        if self.unbuilt:
            raise pickle.UnpicklingError("a numpy array without its data (no BUILD)")
        self.check_nesting(value)
        return value

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[module, name]
        except (KeyError, TypeError):
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

    # --------------------------------------------------------------------------- narrowed opcodes
    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self.callables or self.callables[id(func)] is not func:
            raise self.refuse(f"a call of {type(func).__name__}")
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE arguments are not a tuple")
        self.stack[-1] = func(*args)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray) and self.unbuilt.get(id(inst)) is inst:
            self.build_array(inst, state)
        elif isinstance(inst, np.dtype):
            self.build_dtype(inst, state)
        else:
            raise self.refuse(f"a state set on a {type(inst).__name__} (BUILD)")

    def load_append(self):
        value = self.stack.pop()
        self.target(list).append(value)

    def load_appends(self):
        items = self.pop_mark()
        self.target(list).extend(items)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self.target(dict)[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        target = self.target(dict)
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_bytearray8(self):
        (length,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(length)))  # read first: at most the bytes left

    def target(self, kind: type):
        if not self.stack or not isinstance(self.stack[-1], kind):
            found = type(self.stack[-1]).__name__ if self.stack else "nothing"
            raise self.refuse(f"items added to a {found}")
        return self.stack[-1]

    def load_tuple(self):
        super().load_tuple()
        self.check_tuple()

    def load_tuple1(self):
        super().load_tuple1()
        self.check_tuple()

    def load_tuple2(self):
        super().load_tuple2()
        self.check_tuple()

    def load_tuple3(self):
        super().load_tuple3()
        self.check_tuple()

    def check_tuple(self):
        """Nested tuples deeper than :data:`MAX_DEPTH` are refused as they are built: hashing one
        (a dict key) recurses in C without a limit."""
        made = self.stack[-1]
        depth = 1 + max(
            (self.tuple_depth.get(id(t), (None, 0))[1] for t in made if type(t) is tuple),
            default=0,
        )
        if depth > MAX_DEPTH:
            raise self.refuse(f"tuples nested more than {MAX_DEPTH} deep")
        if depth > 1:
            self.tuple_depth[id(made)] = (made, depth)

    for _opcode, _method in (
        (pickle.REDUCE, load_reduce),
        (pickle.BUILD, load_build),
        (pickle.APPEND, load_append),
        (pickle.APPENDS, load_appends),
        (pickle.SETITEM, load_setitem),
        (pickle.SETITEMS, load_setitems),
        (pickle.BYTEARRAY8, load_bytearray8),
        (pickle.TUPLE, load_tuple),
        (pickle.TUPLE1, load_tuple1),
        (pickle.TUPLE2, load_tuple2),
        (pickle.TUPLE3, load_tuple3),
    ):
        dispatch[_opcode[0]] = _method
    del _opcode, _method

    # --------------------------------------------------------------------------- reconstructors
    def ordered_dict(self, items=()):
        if not isinstance(items, (list, tuple)):
            raise self.refuse(f"an OrderedDict made from a {type(items).__name__}")
        return collections.OrderedDict(items)

    def encode(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in LATIN1:
            raise self.refuse(f"a call of _codecs.encode with {type(text).__name__}, {encoding!r}")
        return text.encode("latin1")

    def empty_bytes(self, *args):
        if args:
            raise self.refuse("a call of bytes with arguments")
        return b""

    def complex(self, real=0.0, imag=0.0):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (real, imag)):
            raise self.refuse("a complex number made from something else than numbers")
        return complex(real, imag)

    def dtype(self, spec, align=False, copy=True):
        """A numpy dtype from a plain type string (native byte order; BUILD may confirm it)."""
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or not PLAIN_DTYPE.fullmatch(spec):
            raise self.refuse(f"the numpy dtype {str(spec)[:40]!r}, which is not a plain type")
        if not all(isinstance(x, (bool, int)) for x in (align, copy)):
            raise pickle.UnpicklingError("malformed numpy dtype arguments")
        return np.dtype(spec)

    def build_dtype(self, dtype: np.dtype, state) -> None:
        """A dtype's BUILD: checked, never applied (its flags and fields never reach numpy)."""
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise pickle.UnpicklingError("malformed numpy dtype state")
        version, order, subarray, names, fields, elsize = state[:6]
        if version not in (3, 4) or (len(state) == 9 and state[8] is not None):
            raise pickle.UnpicklingError(f"unknown numpy dtype state version {version!r}")
        if subarray is not None or names is not None or fields is not None:
            raise self.refuse("a numpy dtype with fields or a sub-array")
        if isinstance(order, bytes):
            order = order.decode("latin1")
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"malformed numpy byte order {str(order)[:8]!r}")
        if order in "<>" and order != NATIVE_ORDER and dtype.itemsize > 1:
            raise self.refuse("a numpy array of another byte order than this machine's")
        if elsize not in (-1, dtype.itemsize) or not isinstance(elsize, int):
            raise pickle.UnpicklingError("numpy dtype state of another size than its type")

    def plain(self, dtype) -> np.dtype:
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biufcSU" or dtype.fields:
            raise self.refuse(f"a numpy array or scalar of dtype {type(dtype).__name__}")
        return dtype

    def buffer(self, data, nbytes: int) -> Any:
        if isinstance(data, str):  # Python 2's str, read as latin-1
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise self.refuse(f"numpy data given as {type(data).__name__}, not bytes")
        size = memoryview(data).nbytes
        if size != nbytes:
            raise pickle.UnpicklingError(f"numpy data of {size} bytes for an array of {nbytes}")
        self.spend(nbytes)
        return data

    def shape(self, shape) -> Tuple[int, ...]:
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if (
            not isinstance(shape, tuple)
            or len(shape) > MAX_NDIM
            or not all(type(n) is int and 0 <= n <= MAX_DIM for n in shape)
        ):
            raise pickle.UnpicklingError("malformed numpy shape")
        return shape

    def reconstruct(self, cls, shape=None, code=None):
        """``_reconstruct(ndarray, (0,), b"b")``: an empty array for the BUILD that follows."""
        if cls is not NDARRAY:
            raise self.refuse("an array of a class other than numpy.ndarray")
        array = np.empty(0, np.uint8)
        self.unbuilt[id(array)] = array
        return array

    def build_array(self, array: np.ndarray, state) -> None:
        """The array's BUILD: ``(version, shape, dtype, is_fortran, data)`` checked and handed to
        numpy as plain bytes of exactly the array's size, with a dtype made here."""
        if isinstance(state, tuple) and len(state) == 4:  # numpy < 1.0: no version
            state = (1, *state)
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise pickle.UnpicklingError("malformed numpy array state")
        _, shape, dtype, fortran, data = state
        shape, dtype = self.shape(shape), self.plain(dtype)
        if not isinstance(fortran, (bool, int)):
            raise pickle.UnpicklingError("malformed numpy array order")
        data = bytes(self.buffer(data, int(np.prod(shape, dtype=object)) * dtype.itemsize))
        del self.unbuilt[id(array)]
        array.__setstate__((1, shape, dtype, bool(fortran), data))

    def scalar(self, dtype, data=None):
        dtype = self.plain(dtype)
        data = self.buffer(data, dtype.itemsize)
        return np.frombuffer(bytes(data), dtype)[0]

    def frombuffer(self, data, dtype, shape, order="C"):
        dtype, shape = self.plain(dtype), self.shape(shape)
        if order not in ("C", "F"):
            raise pickle.UnpicklingError("malformed numpy order")
        data = self.buffer(data, int(np.prod(shape, dtype=object)) * dtype.itemsize)
        return np.frombuffer(data, dtype).reshape(shape, order=order)

    # --------------------------------------------------------------------------- the result
    def check_nesting(self, root) -> None:
        """Refuse containers nested deeper than :data:`MAX_DEPTH` or holding themselves (walked
        without recursion; shared parts once)."""
        depth: Dict[int, int] = {}
        active = -1
        todo = [(root, False)]
        while todo:
            obj, finished = todo.pop()
            if not isinstance(obj, (list, tuple, dict)):
                continue
            if finished:
                deepest = max((depth.get(id(c), 0) for c in _children(obj)), default=0)
                if deepest >= MAX_DEPTH:
                    raise self.refuse(f"containers nested more than {MAX_DEPTH} deep")
                depth[id(obj)] = 1 + deepest
                continue
            known = depth.get(id(obj))
            if known == active:
                raise self.refuse("a container that holds itself")
            if known is not None:
                continue
            depth[id(obj)] = active
            todo.append((obj, True))
            todo.extend((c, False) for c in _children(obj))


def _children(container):
    if isinstance(container, dict):
        return [*container.keys(), *container.values()]
    return container


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
