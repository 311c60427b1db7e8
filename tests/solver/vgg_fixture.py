"""The VGG-16 fixture: plans and weights that ``compress`` made on VGG-style chains (first before
the solver took any module graph; rewritten when plans changed on purpose: one held-out image in
every case, d'' chosen per layer), stored in ``fixtures/vgg_compress.json`` so that a test can
tell that the chain is still one case of the general path with the same results.

    python -m tests.solver.vgg_fixture     # writes the fixture (only when the results must change)

Each case is a seeded network, seeded images and ``compress`` options; its record is the plan (less
the per-layer ``seconds``, which are timings), the Frobenius norm of every tensor of the
accelerated state dict and the accelerated network's output on a seeded probe image. Those are
compared within float32 noise: the bits of an eigendecomposition differ between CPUs (the sha256
of the weights, kept for reference, matches only on the machine that wrote the fixture), and an
eigenvector's sign may flip, which leaves the norms and the output unchanged.
"""

import json
import os

import torch

from accel_det.models.vgg import vgg16_features
from accel_det.solver import compress
from accel_det.solver.checkpoint import tensors_digest
from accel_det.utils.timing import num_threads

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "vgg_compress.json")
SHORT = ((0.01, 3), (1.0, 3))
TIMINGS = ("seconds",)  # per-layer fields that are timings, not results

# name -> (network, images, options)
CASES = {
    # a narrow VGG-16 (every conv of the 13), every channel method, rank selection on
    **{
        f"vgg16_w0.125_{method}": ("vgg16:0.125", (3, 4, 32), dict(speedup=3.0, method=method))
        for method in ("linear", "nonlinear", "asym", "asym3d", "jaderberg", "svd")
    },
    "vgg16_w0.125_asym_uniform_round1": (
        "vgg16:0.125",
        (3, 4, 32),
        dict(speedup=2.0, method="asym", rank_selection=False, round_ranks_to=1),
    ),
    "vgg16_w0.125_asym3d_nocache_skip2": (
        "vgg16:0.125",
        (3, 4, 32),
        dict(speedup=2.5, method="asym3d", memory=0, skip=("conv1_1", "conv3_2"), seed=5),
    ),
    # VGG-16 itself (torchvision's widths) at a small input
    **{
        f"vgg16_full_{method}": ("vgg16:1.0", (2, 2, 32), dict(speedup=4.0, method=method))
        for method in ("linear", "nonlinear", "asym", "asym3d")
    },
}


def network(spec: str):
    kind, width = spec.split(":")
    torch.manual_seed(0)
    features = vgg16_features(float(width))
    for module in features:  # He-initialised with non-zero biases (zeros would hide bias bugs)
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    return features.eval()


def images(count: int, batch: int, size: int):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(batch, 3, size, size, generator=g) for _ in range(count)]


def run_case(name: str) -> dict:
    """The plan (timings dropped, JSON round-tripped) and the weights' sha256 of case ``name``."""
    spec, shape, options = CASES[name]
    with num_threads(1):
        result = compress(network(spec), images(*shape), schedule=SHORT, progress=False, **options)
    plan = json.loads(json.dumps(result.plan))
    for entry in plan["layers"].values():
        for key in TIMINGS:
            entry.pop(key, None)
    state = result.model.state_dict()
    probe = torch.rand(1, 3, shape[2], shape[2], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = result.model(probe).flatten().double()
    return {
        "plan": plan,
        "weights_sha256": tensors_digest(state),
        "weight_norms": {k: v.double().norm().item() for k, v in state.items()},
        "output": output.tolist(),
    }


def main() -> None:
    records = {name: run_case(name) for name in CASES}
    with open(FIXTURE, "w") as file:
        json.dump(records, file, indent=1, sort_keys=True)
        file.write("\n")
    print(f"wrote {FIXTURE} ({len(records)} cases)")


if __name__ == "__main__":
    main()
