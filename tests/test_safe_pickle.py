"""The restricted unpickler (accel_det.utils.safe_pickle): plain data loads as every Python and
numpy writes it; anything that names another global, drives numpy's reconstructors with
attacker state, allocates far beyond the file's size or nests without end is one
:class:`AccelDetError`, before it is called; thousands of mutated proposal files end as a valid
result or that one error, never a crash or a hang (a process under memory and time limits)."""

import collections
import contextlib
import datetime
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from accel_det.errors import AccelDetError
from accel_det.utils import safe_pickle
from accel_det.utils.safe_pickle import MAX_DEPTH, SafeUnpickler, load_pickle
from tests.helpers import REPO

# Python 2 / numpy 1 (Caffe2-era .pkl weights): {"conv1_w": float32 [1, 2]}, protocol 2, str data
PYTHON2_PICKLE = (
    b"\x80\x02}q\x00U\x07conv1_wq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\n"
    b"q\x03K\x00\x85q\x04U\x01bq\x05\x87q\x06Rq\x07(K\x01K\x02\x85q\x08cnumpy\ndtype\nq\tU\x02f4q"
    b"\nK\x00K\x01\x87q\x0bRq\x0c(K\x03U\x01<q\rNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0eb"
    b"\x89U\x08\x00\x00\x80?\x00\x00\x00@q\x0ftq\x10bs."
)
# Python 2, protocol 0 (text): {"blobs": {"w": int64 [3]}, "__author__": "x"} as numpy 1 wrote it
PYTHON2_TEXT_PICKLE = (
    b"(dp0\nS'blobs'\np1\n(dp2\nS'w'\np3\ncnumpy.core.multiarray\n_reconstruct\np4\n(cnumpy\n"
    b"ndarray\np5\n(I0\ntp6\nS'b'\np7\ntp8\nRp9\n(I1\n(L3L\ntp10\ncnumpy\ndtype\np11\n(S'i8'\np12\n"
    b"I0\nI1\ntp13\nRp14\n(I3\nS'<'\np15\nNNNI-1\nI-1\nI0\ntp16\nbI00\nS'\\x01\\x00\\x00\\x00\\x00"
    b"\\x00\\x00\\x00\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x00\\x00\\x00"
    b"\\x00'\np17\ntp18\nbssS'__author__'\np19\nS'x'\np20\ns."
)


class RunsCode:
    """Unpickling it runs a command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def detectron2_style_weights():
    arrays = collections.OrderedDict(
        [
            ("backbone.features.0.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)),
            ("backbone.features.0.bias", np.zeros(2, dtype=np.float64)),
            ("fortran", np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))),
            ("scalar_array", np.array(7, dtype=np.uint8)),
            ("empty", np.zeros((0, 4), dtype=np.float32)),
            ("flags", np.array([True, False])),
            ("complex", np.array([1 + 2j], dtype=np.complex64)),
            ("half", np.array([0.5], dtype=np.float16)),
        ]
    )
    return {
        "model": arrays,
        "__author__": "accel-det test",
        "matching_heuristics": True,
        "scalars": [np.float32(1.5), np.int64(3), np.bool_(True), 2.5, 1j, None, True, 2**70],
        "other": {"bytes": b"\x00\xff", "dtype": np.dtype("i4"), "tuple": (1, ("a", b"b"))},
        "strings": np.array(["ab", "c"]),
        "byte_strings": np.array([b"ab", b"c"]),
    }


def check_loaded(loaded, data):
    assert isinstance(loaded["model"], collections.OrderedDict)
    assert list(loaded["model"]) == list(data["model"])
    for key, value in data["model"].items():
        assert loaded["model"][key].dtype == value.dtype, key
        assert loaded["model"][key].shape == value.shape, key
        assert np.array_equal(loaded["model"][key], value), key
    assert loaded["__author__"] == "accel-det test" and loaded["scalars"] == data["scalars"]
    assert [type(x) for x in loaded["scalars"]] == [type(x) for x in data["scalars"]]
    assert loaded["other"] == data["other"]
    assert loaded["strings"].tolist() == ["ab", "c"]
    assert loaded["byte_strings"].tolist() == [b"ab", b"c"]


@contextlib.contextmanager
def numpy1_names():
    """Pickles written as numpy 1 writes them: its reconstructors under ``numpy.core.*`` (numpy 2
    writes ``numpy._core.*``)."""
    from numpy._core import multiarray, numeric

    saved = {
        name: sys.modules.get(name) for name in ("numpy.core.multiarray", "numpy.core.numeric")
    }
    renamed = {}
    for module, functions in (
        ("numpy.core.multiarray", (multiarray._reconstruct, multiarray.scalar)),
        ("numpy.core.numeric", (numeric._frombuffer,)),
    ):
        fake = types.ModuleType(module)
        for function in functions:
            stand_in = (
                types.FunctionType(function.__code__, function.__globals__, function.__name__)
                if isinstance(function, types.FunctionType)
                else _stand_in(function)
            )
            stand_in.__module__, stand_in.__qualname__ = module, function.__name__
            setattr(fake, function.__name__, stand_in)
            renamed[function] = stand_in
        sys.modules[module] = fake
    try:
        yield renamed
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _stand_in(builtin):
    def stand_in(*args):
        return builtin(*args)

    stand_in.__name__ = builtin.__name__
    return stand_in


def dumps_numpy1(obj, protocol):
    with numpy1_names() as renamed:

        class Numpy1Pickler(pickle.Pickler):
            def reducer_override(self, value):
                if isinstance(value, (np.ndarray, np.generic)):
                    reduced = value.__reduce_ex__(protocol)
                    return (renamed.get(reduced[0], reduced[0]), *reduced[1:])
                return NotImplemented

        buffer = io.BytesIO()
        Numpy1Pickler(buffer, protocol=protocol).dump(obj)
        data = buffer.getvalue()
    assert b"numpy._core" not in data and (b"numpy.core" in data or protocol < 2)
    return data


def unpickle(data, **kwargs):
    return SafeUnpickler(io.BytesIO(data), "test.pkl", "weights file", **kwargs).load()


@pytest.mark.parametrize("numpy_version", [1, 2])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads_in_every_protocol(tmp_path, protocol, numpy_version):
    data = detectron2_style_weights()
    path = tmp_path / "weights.pkl"
    path.write_bytes(
        dumps_numpy1(data, protocol) if numpy_version == 1 else pickle.dumps(data, protocol)
    )
    check_loaded(load_pickle(str(path), "weights file"), data)


def test_python2_numpy1_pickles_load():
    loaded = unpickle(PYTHON2_PICKLE, encoding="latin1")
    assert loaded["conv1_w"].dtype == np.float32 and loaded["conv1_w"].tolist() == [1.0, 2.0]
    loaded = unpickle(PYTHON2_TEXT_PICKLE, encoding="latin1")
    assert loaded["__author__"] == "x" and loaded["blobs"]["w"].tolist() == [1, 2, 3]
    assert loaded["blobs"]["w"].dtype == np.int64


def test_shared_arrays_stay_shared():
    a = np.arange(3.0)
    loaded = unpickle(pickle.dumps({"x": a, "y": a}, protocol=2))
    assert loaded["x"] is loaded["y"] and loaded["x"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ids": ["1"], "boxes": RunsCode(marker)}, protocol=protocol))
    with pytest.raises(AccelDetError) as error:
        load_pickle(str(path), "proposal file")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"refusing proposal file {path}: ")
    assert f"names the global {os.system.__module__}.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [
        collections.Counter("ab"),
        datetime.date(2024, 4, 17),
        np.random.RandomState(0),
        range(10),
        slice(1, 2),
        bytearray(b"ab"),
        np.ma.masked_array([1.0]),
        np.array([1], dtype=[("a", "i4")]),
    ],
    ids=["Counter", "date", "RandomState", "range", "slice", "bytearray", "masked", "record"],
)
def test_other_globals_are_refused(value):
    with pytest.raises(AccelDetError, match="^refusing weights file test.pkl: it (names|holds)"):
        unpickle(pickle.dumps(value, protocol=2))


# --------------------------------------------------------------------------- hand-made pickles
def op(code, *args):
    """One pickle opcode and its argument bytes."""
    return code + b"".join(args)


def text(s: str) -> bytes:
    data = s.encode()
    return op(pickle.BINUNICODE, struct.pack("<I", len(data)), data)


def glob(module, name):
    return op(pickle.GLOBAL, f"{module}\n{name}\n".encode())


def stop(body: bytes) -> bytes:
    return b"\x80\x02" + body + pickle.STOP


def dtype_of(spec, state=None):
    """``numpy.dtype(spec, False, True)`` with an optional BUILD ``state`` (opcodes)."""
    made = glob("numpy", "dtype") + text(spec) + pickle.NEWFALSE + pickle.NEWTRUE
    made += pickle.TUPLE3 + pickle.REDUCE
    return made + (state + pickle.BUILD if state else b"")


def flags_state(flags):
    """A dtype's BUILD state ``(3, '<', None, None, None, 8, 8, flags)``."""
    ints = b"".join(op(pickle.BININT, struct.pack("<i", v)) for v in (8, 8, flags))
    return (
        pickle.MARK
        + op(pickle.BININT1, b"\x03")
        + text("<")
        + pickle.NONE * 3
        + ints
        + (pickle.TUPLE)
    )


HOSTILE = {
    # an object dtype whose flags say "no references": numpy would read 8 bytes as a PyObject*
    "object-dtype-scalar": stop(
        glob("numpy._core.multiarray", "scalar")
        + dtype_of("O8", flags_state(0))
        + op(pickle.SHORT_BINBYTES, b"\x08", b"\x41" * 8)
        + pickle.TUPLE2
        + pickle.REDUCE
    ),
    # a plain dtype with the fields of a record
    "dtype-fields": stop(
        dtype_of(
            "f8",
            pickle.MARK
            + op(pickle.BININT1, b"\x03")
            + text("<")
            + pickle.NONE
            + pickle.EMPTY_TUPLE
            + pickle.EMPTY_DICT
            + op(pickle.BININT1, b"\x08") * 3
            + pickle.TUPLE,
        )
    ),
    # numpy.ndarray(shape, dtype, buffer, offset=-100): reads memory before the buffer
    "ndarray-offset": stop(
        glob("numpy", "ndarray")
        + pickle.MARK
        + op(pickle.BININT1, b"\x08")
        + pickle.TUPLE1
        + dtype_of("u1")
        + op(pickle.SHORT_BINBYTES, b"\x08", b"\x00" * 8)
        + op(pickle.BININT, struct.pack("<i", -100))
        + pickle.TUPLE
        + pickle.REDUCE
    ),
    # set(range(10**12)) and bytearray(8 << 30): 47 and 33 bytes that ask for gigabytes
    "set-range": stop(
        glob("builtins", "set")
        + glob("builtins", "range")
        + op(pickle.LONG1, b"\x06", (10**12).to_bytes(6, "little"))
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.TUPLE1
        + pickle.REDUCE
    ),
    "bytearray": stop(
        glob("builtins", "bytearray")
        + op(pickle.LONG1, b"\x05", (8 << 30).to_bytes(5, "little"))
        + pickle.TUPLE1
        + pickle.REDUCE
    ),
    "set-opcodes": b"\x80\x04"
    + pickle.EMPTY_SET
    + pickle.MARK
    + pickle.NONE
    + pickle.ADDITEMS
    + pickle.STOP,
    "frozenset-opcode": b"\x80\x04" + pickle.MARK + pickle.FROZENSET + pickle.STOP,
    # a length far past the end of the file: nothing of that size is allocated
    "bytearray8-length": b"\x80\x05"
    + op(pickle.BYTEARRAY8, struct.pack("<Q", 1 << 40))
    + pickle.STOP,
    "binbytes8-length": b"\x80\x04"
    + op(pickle.BINBYTES8, struct.pack("<Q", 1 << 40))
    + pickle.STOP,
    "frame-length": b"\x80\x04" + op(pickle.FRAME, struct.pack("<Q", 1 << 40)) + pickle.STOP,
    # a tuple nested 100,000 deep used as a dict key: hashing it recursed until the stack ran out
    "deep-tuple-key": stop(
        pickle.EMPTY_DICT
        + pickle.EMPTY_TUPLE
        + pickle.TUPLE1 * 100_000
        + pickle.NONE
        + pickle.SETITEM
    ),
    "deep-list": stop(pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999),
    "self-holding": stop(
        pickle.EMPTY_LIST + op(pickle.BINPUT, b"\x00") + op(pickle.BINGET, b"\x00") + pickle.APPEND
    ),
    "extension": stop(op(pickle.EXT1, b"\x01")),
    "newobj": stop(glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ),
    "build-on-dict": stop(pickle.EMPTY_DICT + pickle.EMPTY_DICT + pickle.BUILD),
    "codecs-other": stop(
        glob("_codecs", "encode") + text("x") + text("zlib") + pickle.TUPLE2 + pickle.REDUCE
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickles_are_one_error(tmp_path, name):
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(AccelDetError) as error:
        load_pickle(str(path), "weights file")
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message


def test_a_dtype_state_is_checked_never_applied():
    """Flags in a dtype's BUILD never reach numpy: the dtype is the plain one made from its
    name."""
    scalar = stop(
        glob("numpy._core.multiarray", "scalar")
        + dtype_of("f8", flags_state(63))
        + op(pickle.SHORT_BINBYTES, b"\x08", struct.pack("<d", 2.5))
        + pickle.TUPLE2
        + pickle.REDUCE
    )
    value = unpickle(scalar)
    assert value == 2.5 and value.dtype == np.float64 and value.dtype.flags == 0
    assert np.dtype("f8").flags == 0


def test_nesting_and_budget_limits(monkeypatch):
    ok = stop(pickle.EMPTY_LIST * MAX_DEPTH + pickle.APPEND * (MAX_DEPTH - 1))
    assert len(json.dumps(unpickle(ok))) == 2 * MAX_DEPTH
    deeper = stop(pickle.EMPTY_LIST * (MAX_DEPTH + 1) + pickle.APPEND * MAX_DEPTH)
    with pytest.raises(AccelDetError, match=f"nested more than {MAX_DEPTH} deep"):
        unpickle(deeper)
    # 100 kB of NONE: at 64 bytes an opcode, more than 1 MiB + 32 bytes per byte of the file
    monkeypatch.setattr(safe_pickle, "BUDGET_BASE", 1 << 20)
    with pytest.raises(AccelDetError, match="more than 4 MiB of objects from a file of its size"):
        unpickle(stop(pickle.NONE * 100_000))
    assert unpickle(stop(pickle.NONE * 10_000 + pickle.POP * 9_999)) is None


def test_extra_globals_are_allowed_only_where_given():
    data = pickle.dumps(collections.Counter("aab"))
    with pytest.raises(AccelDetError, match="collections.Counter"):
        SafeUnpickler(io.BytesIO(data), "x").load()
    extra = {("collections", "Counter"): collections.Counter}
    assert SafeUnpickler(io.BytesIO(data), "x", extra=extra).load() == collections.Counter("aab")


def test_missing_and_corrupt_files_are_one_line(tmp_path):
    with pytest.raises(AccelDetError, match="^proposal file not found: "):
        load_pickle(str(tmp_path / "nope.pkl"), "proposal file")
    for name, data in (
        ("bad", b"not a pickle"),
        ("empty", b""),
        ("cut", pickle.dumps([1] * 9)[:9]),
    ):
        (tmp_path / f"{name}.pkl").write_bytes(data)
        with pytest.raises(AccelDetError, match=f"^cannot read proposal file .*{name}.pkl: "):
            load_pickle(str(tmp_path / f"{name}.pkl"), "proposal file")


FUZZ = """
import json, pickle, random, resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from accel_det.errors import AccelDetError
from accel_det.utils.safe_pickle import load_pickle
seeds = [open(p, "rb").read() for p in sys.argv[3:]]
rng, count, path = random.Random(0), int(sys.argv[1]), sys.argv[2]
results = {"loaded": 0, "refused": 0}
PLAIN = (dict, list, tuple, str, bytes, bytearray, memoryview, int, float, complex, type(None))
def check_plain(value):
    todo = [value]
    while todo:
        value = todo.pop()
        if isinstance(value, (np.ndarray, np.generic)):
            assert value.dtype.kind in "biufcSU" and not value.dtype.fields, value.dtype
        elif not isinstance(value, (PLAIN, np.dtype)):
            raise AssertionError(f"{type(value)} loaded")
        elif isinstance(value, dict):
            todo += [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple)):
            todo += value
opcodes = sorted(set(pickle.HIGHEST_PROTOCOL.to_bytes(1, "little") + bytes(range(0x20, 0x97))))
def mutate(data):
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        kind, at = rng.randrange(6), rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = bytes([rng.choice(opcodes)])
        elif kind == 2:
            del data[at:at + rng.randrange(1, 9)]
        elif kind == 3:
            data = data[:at]
        elif kind == 4:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            data[at:at] = other[start:start + rng.randrange(1, 64)]
        else:
            data[at:at + 8] = rng.randrange(1 << 64).to_bytes(8, "little")
    return bytes(data)
for i in range(count):
    data = mutate(rng.choice(seeds)) if i % 10 else bytes(rng.randrange(256) for _ in range(64))
    with open(path, "wb") as f:
        f.write(data)
    try:
        check_plain(load_pickle(path, "proposal file"))
        results["loaded"] += 1
    except AccelDetError as error:
        message = str(error)
        assert "\\n" not in message and path in message, (data, message)
        results["refused"] += 1
    except BaseException as error:
        raise SystemExit(f"case {i}: {type(error).__name__}: {error!r} from {data!r}")
print(json.dumps(results))
"""


def test_fuzzed_proposal_files_are_a_result_or_one_error(tmp_path):
    """2,000 random and mutated pickles (a real proposal file in protocols 2 and 5, Python 2
    weights; byte flips, opcodes inserted, cuts, splices, 8-byte lengths) in one process limited
    to 2 GiB of address space and 120 s: each loads or is an AccelDetError, never a crash, a
    MemoryError or a hang."""
    from accel_det.detection.proposals import write_proposal_file

    rng = np.random.default_rng(0)
    seeds = []
    boxes = [rng.uniform(0, 50, (n, 4)).astype(np.float32) for n in (40, 0, 25)]
    write_proposal_file(str(tmp_path / "proposals.pkl"), ["1", "2", "3"], boxes)
    seeds.append(tmp_path / "proposals.pkl")
    data = pickle.loads(seeds[0].read_bytes())
    for protocol in (0, 2):
        seeds.append(tmp_path / f"proposals{protocol}.pkl")
        seeds[-1].write_bytes(pickle.dumps(data, protocol=protocol))
    seeds.append(tmp_path / "python2.pkl")
    seeds[-1].write_bytes(PYTHON2_TEXT_PICKLE)
    result = subprocess.run(
        [sys.executable, "-c", FUZZ, "2000", str(tmp_path / "case.pkl"), *map(str, seeds)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout)
    assert counts["loaded"] + counts["refused"] == 2000 and counts["loaded"] > 50, counts
