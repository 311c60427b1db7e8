import pytest

from accel_det.utils.timing import num_threads


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster, and immune to other processes on a shared machine
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with num_threads(1):
        yield
