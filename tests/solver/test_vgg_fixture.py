"""VGG-16 chains through the general solver: the plans and weights ``compress`` made
(``fixtures/vgg_compress.json``, written by ``tests/solver/vgg_fixture.py``; first by the code
before it took module graphs, rewritten when the plans changed on purpose): the same structures
and ranks, the same errors, weight norms and outputs within float32 noise (bit for bit on the
machine that wrote the fixture; see ``vgg_fixture``); and plans of format 1 still build."""

import json
import os

import pytest
import torch
from pytest import approx

from accel_det.errors import AccelDetError
from accel_det.nn import apply_plan
from accel_det.plan import Plan
from tests.solver.vgg_fixture import CASES, FIXTURE, network, run_case

# the full-width asym3d and nonlinear cases take 25 s: run them with ACCEL_DET_FULL_FIXTURE=1
SLOW = {"vgg16_full_asym3d", "vgg16_full_nonlinear"}
RUN = [n for n in CASES if n not in SLOW or os.environ.get("ACCEL_DET_FULL_FIXTURE")]


@pytest.fixture(scope="module")
def stored():
    with open(FIXTURE) as file:
        return json.load(file)


def close(value):
    """Floats (errors, energies) within float32 noise; everything else exactly."""
    return approx(value, rel=1e-3, abs=1e-6) if isinstance(value, float) else value


@pytest.mark.parametrize("name", RUN)
def test_vgg_plans_and_weights_are_unchanged(stored, name):
    old, new = stored[name], run_case(name)
    assert new["weight_norms"] == approx(old["weight_norms"], rel=1e-4, abs=1e-6)
    scale = max(map(abs, old["output"]))
    assert new["output"] == approx(old["output"], rel=1e-3, abs=1e-4 * scale)
    plan = new["plan"]
    assert plan["format"] == old["plan"]["format"] == "accel-det-plan/2"
    for key, value in old["plan"].items():
        if key != "layers":
            assert plan[key] == close(value), key
    assert list(plan["layers"]) == list(old["plan"]["layers"])  # conv1_1 ... in order
    for layer, entry in old["plan"]["layers"].items():
        for key, value in entry.items():
            assert plan["layers"][layer][key] == close(value), (layer, key)
        # what format 2 adds: the module each VGG name stands for, and what follows it
        assert plan["layers"][layer]["after"] == "relu"
    assert plan["layers"]["conv1_2"]["module"] == "2"
    assert plan["layers"]["conv5_3"]["module"] == "28"


def test_a_plan_of_the_old_format_still_builds_its_network(stored):
    """Format 1 named every conv by its VGG name and had no ``module`` nor ``after``."""
    plan = stored["vgg16_w0.125_asym3d"]["plan"]
    layers = {
        name: {k: v for k, v in entry.items() if k not in ("module", "after")}
        for name, entry in plan["layers"].items()
    }
    old = Plan.from_dict({**plan, "format": "accel-det-plan/1", "layers": layers})
    rebuilt = apply_plan(network("vgg16:0.125"), old)
    new = apply_plan(network("vgg16:0.125"), run_case("vgg16_w0.125_asym3d")["plan"])
    assert [type(m) for m in rebuilt] == [type(m) for m in new]
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in new.state_dict().items()
    }
    assert torch.is_tensor(rebuilt[2].horizontal.weight)  # conv1_2 became the 3d structure
    with pytest.raises(AccelDetError, match="conv2_1 has module 5, expected a qualified"):
        Plan.from_dict({"layers": {"conv2_1": {"module": 5, "structure": "original"}}})
    with pytest.raises(AccelDetError, match="unsupported plan format 'accel-det-plan/3'"):
        Plan.from_dict({"format": "accel-det-plan/3", "layers": {}})
