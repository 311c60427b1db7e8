"""``--weights torchvision``: torch hub's download with its hash check, the cached file checked
too, loaded with ``weights_only=True``; offline (torch hub's ``urlopen`` is replaced)."""

import email.message
import hashlib
import io
import os

import pytest
import torch
import torchvision.models

from accel_det.errors import AccelDetError
from accel_det.models.vgg import hub_cache_file, load_vgg16_state_dict

URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # VGG16_Weights.IMAGENET1K_V1


class RunsCode:
    """Unpickling it runs a command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Response(io.BytesIO):
    """What ``urllib.request.urlopen`` returns, for torch hub's ``download_url_to_file``."""

    def info(self):
        meta = email.message.Message()
        meta["Content-Length"] = str(len(self.getvalue()))
        return meta


class Weights:
    """A stand-in for ``VGG16_Weights`` whose IMAGENET1K_V1 lives at ``url`` (torchvision's
    ``get_state_dict`` is ``load_state_dict_from_url`` with its defaults)."""

    def __init__(self, url):
        self.url = url
        self.IMAGENET1K_V1 = self

    def get_state_dict(self, *args, **kwargs):
        return torch.hub.load_state_dict_from_url(self.url, *args, **kwargs)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache; any download gets ``served["bytes"]`` (none: no network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip("torch.hub.set_dir() was called: TORCH_HOME is not used")
    served = {}

    def urlopen(request, *args, **kwargs):
        if "bytes" not in served:
            raise OSError("no network in this test")
        served["url"] = getattr(request, "full_url", request)
        return Response(served["bytes"])

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    served["cache"] = os.path.join(torch.hub.get_dir(), "checkpoints")
    return served


def cached(hub, name, data):
    os.makedirs(hub["cache"], exist_ok=True)
    path = os.path.join(hub["cache"], name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def hashed_url(data, stem="vgg16"):
    return f"https://download.example/models/{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_the_url_is_torchvisions():
    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url == URL
    assert os.path.basename(hub_cache_file(URL)) == "vgg16-397923af.pth"


def test_a_cached_file_with_another_hash_is_refused(hub):
    path = cached(hub, "vgg16-397923af.pth", torch_bytes({"features.0.weight": torch.zeros(1)}))
    with pytest.raises(AccelDetError) as error:
        load_vgg16_state_dict("torchvision")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"torchvision's VGG-16 weights {path} have")
    assert "not the 397923af... of their name" in message and "delete it" in message


def test_a_corrupt_download_is_refused_and_not_kept(hub):
    hub["bytes"] = b"not the weights"
    with pytest.raises(AccelDetError) as error:
        load_vgg16_state_dict("torchvision")
    message = str(error.value)
    assert "\n" not in message and hub["url"] == URL
    assert message.startswith(f"cannot download torchvision's VGG-16 weights from {URL}: ")
    assert 'invalid hash value (expected "397923af"' in message
    assert not os.path.exists(hub_cache_file(URL))


def test_a_pickle_that_would_run_code_is_refused_unrun(hub, tmp_path, monkeypatch):
    """Even with the right hash (a URL named after the file's hash): weights_only=True."""
    marker = tmp_path / "pwned"
    data = torch_bytes({"features.0.weight": RunsCode(marker)})
    url = hashed_url(data)
    path = cached(hub, os.path.basename(url), data)
    monkeypatch.setattr(torchvision.models, "VGG16_Weights", Weights(url))
    with pytest.raises(AccelDetError) as error:
        load_vgg16_state_dict("torchvision")
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        f"cannot read torchvision's VGG-16 weights {path}"
    )
    assert "Weights only load failed" in message and not marker.exists()


def test_genuine_weights_download_and_load(hub, monkeypatch):
    state = {"features.0.weight": torch.arange(6.0).reshape(2, 3), "features.0.bias": torch.ones(2)}
    hub["bytes"] = torch_bytes(state)
    url = hashed_url(hub["bytes"])
    monkeypatch.setattr(torchvision.models, "VGG16_Weights", Weights(url))
    for _ in range(2):  # downloaded (checked by torch hub), then from the cache (checked by us)
        loaded = load_vgg16_state_dict("torchvision")
        assert loaded.keys() == state.keys() and all(
            torch.equal(loaded[k], state[k]) for k in state
        )
        assert os.path.isfile(hub_cache_file(url))
        hub.pop("bytes", None)
