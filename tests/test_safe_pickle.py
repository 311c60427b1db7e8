"""The allow-list unpickler (accel_det.utils.safe_pickle): plain data loads, anything that names
another global is refused before it is called."""

import collections
import datetime
import io
import os
import pickle

import numpy as np
import pytest

from accel_det.errors import AccelDetError
from accel_det.utils.safe_pickle import SafeUnpickler, load_pickle

# Python 2 / numpy 1 (Caffe2-era .pkl weights): {"conv1_w": float32 [1, 2]}, protocol 2, str data
PYTHON2_PICKLE = (
    b"\x80\x02}q\x00U\x07conv1_wq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\n"
    b"q\x03K\x00\x85q\x04U\x01bq\x05\x87q\x06Rq\x07(K\x01K\x02\x85q\x08cnumpy\ndtype\nq\tU\x02f4q"
    b"\nK\x00K\x01\x87q\x0bRq\x0c(K\x03U\x01<q\rNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0eb"
    b"\x89U\x08\x00\x00\x80?\x00\x00\x00@q\x0ftq\x10bs."
)


class RunsCode:
    """Unpickling it runs a command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def detectron2_style_weights():
    return {
        "model": collections.OrderedDict(
            [
                ("backbone.features.0.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)),
                ("backbone.features.0.bias", np.zeros(2, dtype=np.float64)),
            ]
        ),
        "__author__": "accel-det test",
        "matching_heuristics": True,
        "scalars": [np.float32(1.5), np.int64(3), 2.5, 1j, None, True],
        "other": {
            "set": {1, 2},
            "frozen": frozenset("a"),
            "bytes": b"\x00\xff",
            "dtype": np.dtype("i4"),
        },
        "strings": np.array(["ab", "c"]),
        "objects": np.array(["a", None], dtype=object),
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads_in_every_protocol(tmp_path, protocol):
    data = detectron2_style_weights()
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(str(path), "weights file")
    assert isinstance(loaded["model"], collections.OrderedDict)
    for key, value in data["model"].items():
        assert loaded["model"][key].dtype == value.dtype
        assert np.array_equal(loaded["model"][key], value)
    assert loaded["__author__"] == "accel-det test" and loaded["scalars"] == data["scalars"]
    assert loaded["other"] == data["other"]
    assert loaded["strings"].tolist() == ["ab", "c"] and loaded["objects"].tolist() == ["a", None]


def test_python2_numpy1_pickle_loads():
    loaded = SafeUnpickler(io.BytesIO(PYTHON2_PICKLE), "old.pkl", encoding="latin1").load()
    assert loaded["conv1_w"].dtype == np.float32 and loaded["conv1_w"].tolist() == [1.0, 2.0]


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
    [collections.Counter("ab"), datetime.date(2024, 4, 17), np.random.RandomState(0)],
    ids=["Counter", "date", "RandomState"],
)
def test_other_globals_are_refused(tmp_path, value):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(value))
    with pytest.raises(AccelDetError, match="names the global"):
        load_pickle(str(path))


def test_extra_globals_are_allowed_only_where_given():
    data = pickle.dumps(collections.Counter("aab"))
    with pytest.raises(AccelDetError, match="collections.Counter"):
        SafeUnpickler(io.BytesIO(data), "x").load()
    extra = {("collections", "Counter"): collections.Counter}
    assert SafeUnpickler(io.BytesIO(data), "x", extra=extra).load() == collections.Counter("aab")


def test_missing_and_corrupt_files_are_one_line(tmp_path):
    with pytest.raises(AccelDetError, match="^proposal file not found: "):
        load_pickle(str(tmp_path / "nope.pkl"), "proposal file")
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(AccelDetError, match="^cannot read proposal file .*bad.pkl: "):
        load_pickle(str(tmp_path / "bad.pkl"), "proposal file")
