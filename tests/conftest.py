import os

import pytest

from accel_det.utils.timing import num_threads


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster, and immune to other processes on a shared machine
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with num_threads(1):
        yield


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """accel-det's cache (images checked before training) in a temporary folder, for the tests and
    the tools they start, instead of ~/.cache/accel_det."""
    os.environ["ACCEL_DET_CACHE_DIR"] = str(tmp_path_factory.mktemp("accel_det_cache"))
    yield
