"""The solver on module graphs: ResNets (torchvision, Detectron2) with batch norms and residual
adds, what follows each conv, brute-force checks of the linear asymmetric form, resume, refusals."""

import math

import pytest
import torch
import torchvision
from torch import nn

from accel_det.errors import AccelDetError
from accel_det.nn import CHANNEL, FactorizedConv2d, analyse, apply_plan
from accel_det.solver import compress, plan_from_structures
from accel_det.solver.targets import find_targets
from tests.helpers import full_rank_planner

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT = ((0.01, 2), (1.0, 2))


def resnet18(seed=0):
    """torchvision's ResNet-18 with random weights and batch norms with random statistics (folding
    the default γ = 1, β = 0, μ = 0, σ² = 1 would hide mistakes)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
            nn.init.uniform_(module.running_mean, -0.2, 0.2)
            nn.init.uniform_(module.running_var, 0.5, 2.0)
    return model.eval()


def batches(count=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, size, size, generator=g) for _ in range(count)]


def test_full_rank_factorization_of_every_resnet18_conv_reproduces_its_logits():
    model = resnet18()
    result = compress(model, batches(), speedup=1.01, method="linear", planner=full_rank_planner,
                      progress=False, heldout_fraction=0)  # fmt: skip
    factorized = [m for m in result.model.modules() if isinstance(m, FactorizedConv2d)]
    assert len(factorized) == 20  # every conv: the stem, 16 in the blocks, 3 downsamples
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        logits, approximated = model(x), result.model(x)
        assert float((approximated - logits).norm() / logits.norm()) < 1e-4
        rebuilt = apply_plan(resnet18(seed=1), result.plan)  # the architecture from the plan
        rebuilt.load_state_dict(result.model.state_dict())
        assert torch.equal(rebuilt(x), approximated)


def test_a_bottleneck_last_conv_is_linear_and_its_first_two_nonlinear():
    specs = {s.module: s for s in find_targets(torchvision.models.resnet50(), (64, 64)).specs}
    assert len(specs) == 53
    assert specs["conv1"].relu
    for block in ("layer1.0", "layer3.5", "layer4.2"):
        assert specs[f"{block}.conv1"].relu and specs[f"{block}.conv2"].relu
        assert not specs[f"{block}.conv3"].relu and specs[f"{block}.conv3"].after == "add"
    assert specs["layer2.0.downsample.0"].after == "add" and specs["layer2.0.conv2"].stride == (
        2,
        2,
    )


def test_detectron2_blocks_are_read_by_fx_and_by_the_table_alike():
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3"]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()  # FrozenBN
    by_fx, by_table = analyse(backbone), analyse(backbone, use_fx=False)
    assert by_fx.graph is None and by_fx.convs == by_table.convs  # the root does not trace
    after = {path: node.after for path, node in by_fx.convs.items()}
    assert after["stem.conv1"] == "relu" and after["res3.0.conv2"] == "relu"
    assert after["res2.2.conv3"] == "add" and after["res3.0.shortcut"] == "add"
    assert all(node.norm == "norm" for node in by_fx.convs.values())
    torchvision_layer = torchvision.models.resnet18().layer2  # BasicBlock, by fx and by the table
    assert analyse(torchvision_layer).convs == analyse(torchvision_layer, use_fx=False).convs


class Residual(nn.Module):
    """x -> r(conv_b(r(conv_a(x))) + x): conv_b is added to the shortcut before the ReLU."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 3, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return torch.relu(self.conv_b(torch.relu(self.conv_a(x))) + x)


def ranks_planner(ranks):
    def planner(specs, eigenvalues):
        plan = plan_from_structures(
            specs, {n: dict(structure=CHANNEL, rank=r) for n, r in ranks.items()}, method="asym"
        )
        for entry in plan["layers"].values():
            entry.update(pca_energy=1.0, error=None, seconds=None)
        return plan

    return planner


def best_rank_one(target, regressor, points=20000):
    """min over rank-1 M and b of Σ‖y − (M ŷ + b)‖², by brute force: M = p qᵀ with q on a fine
    grid of the unit sphere (p and b then by least squares in closed form), then the best point
    polished by a local random search."""
    y = target.double() - target.double().mean(0)
    yh = regressor.double() - regressor.double().mean(0)
    total = float(y.square().sum())

    def cost(q):  # q: G × 3 directions
        s = yh @ q.T  # n × G
        cross = y.T @ s  # 3 × G
        return total - cross.square().sum(0) / s.square().sum(0)

    i = torch.arange(points, dtype=torch.float64) + 0.5
    z, phi = 1 - 2 * i / points, math.pi * (1 + 5**0.5) * i
    grid = torch.stack([(1 - z**2).sqrt() * phi.cos(), (1 - z**2).sqrt() * phi.sin(), z], 1)
    values = cost(grid)
    best, value = grid[values.argmin()], float(values.min())
    g = torch.Generator().manual_seed(0)
    for scale in (1e-2, 1e-3, 1e-4, 1e-5):
        for _ in range(20):
            trial = best + scale * torch.randn(200, 3, generator=g, dtype=torch.float64)
            trial_values = cost(trial)
            if float(trial_values.min()) < value:
                best, value = trial[trial_values.argmin()], float(trial_values.min())
    return value


def test_the_asymmetric_solution_of_a_residual_conv_matches_brute_force_least_squares():
    torch.manual_seed(0)
    model = Residual().eval()
    images = batches(count=2, size=6)
    options = dict(samples_per_image=36, heldout_fraction=0, schedule=SHORT, progress=False)
    result = compress(model, images, speedup=1.5, method="asym",
                      planner=ranks_planner({"conv_a": 1, "conv_b": 1}), **options)  # fmt: skip
    assert result.plan["layers"]["conv_b"]["relu"] is False  # added to the shortcut: linear
    assert result.plan["layers"]["conv_a"]["relu"] is True
    x = torch.cat(images)
    with torch.no_grad():
        y = model.conv_b(torch.relu(model.conv_a(x)))  # the original responses
        approximated_input = torch.relu(result.model.conv_a(x))  # x̂: conv_a already factored
        regressor = model.conv_b(approximated_input)  # ŷ = W x̂ + b₀
        solved = result.model.conv_b(approximated_input)  # M ŷ + b
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731
    solver_cost = float((rows(y) - rows(solved)).double().square().sum())
    brute = best_rank_one(rows(y), rows(regressor))
    assert solver_cost == pytest.approx(brute, rel=1e-5)
    # the symmetric solution (PCA of y, eq. 4) leaves more error on the approximated input
    symmetric = compress(model, images, speedup=1.5, method="nonlinear",
                         planner=ranks_planner({"conv_a": 1, "conv_b": 1}), **options)  # fmt: skip
    with torch.no_grad():
        other = symmetric.model.conv_b(torch.relu(symmetric.model.conv_a(x)))
    assert float((rows(y) - rows(other)).double().square().sum()) > 1.01 * solver_cost


class Stop(Exception):
    pass


def test_resume_after_a_kill_is_bit_identical_on_a_resnet18(tmp_path):
    model, images = resnet18(), batches()
    options = dict(speedup=2.0, method="asym", schedule=SHORT, progress=False, round_ranks_to=8)
    full = compress(model, images, **options)
    checkpoint = str(tmp_path / "ckpt.pth")

    def stop(name, entry):
        if name == "layer2.0.conv2":
            raise Stop

    with pytest.raises(Stop):
        compress(model, images, checkpoint=checkpoint, on_layer_done=stop, **options)
    finished = []
    resumed = compress(
        model,
        images,
        checkpoint=checkpoint,
        resume=True,
        on_layer_done=lambda n, e: finished.append(n),
        **options,
    )
    assert finished[0] == "layer2.0.downsample.0" and len(finished) == 20 - 7
    drop = lambda e: {k: v for k, v in e.items() if k != "seconds"}  # noqa: E731
    assert [drop(e) for e in resumed.plan["layers"].values()] == [
        drop(e) for e in full.plan["layers"].values()
    ]
    state = resumed.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in full.model.state_dict().items())


class Untraceable(nn.Module):
    """A ResNet-18 whose own forward does not trace (Python control flow on a value): the solver
    reads its blocks by fx one by one and runs it with hooks."""

    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, x):
        if x.sum() > -1e9:
            return self.resnet(x)
        return x


def test_networks_that_do_not_trace_run_with_hooks_to_the_same_result():
    model, images = resnet18(), batches(count=1)
    options = dict(speedup=2.0, method="asym", schedule=SHORT, progress=False)
    traced = compress(model, images, **options)  # graph passes, each from the last one's values
    hooked = compress(Untraceable(model), images, **options)  # hooks, each pass from the images
    assert find_targets(Untraceable(model), (32, 32)).graph.graph is None
    assert [e["rank"] for e in hooked.plan["layers"].values()] == [
        e["rank"] for e in traced.plan["layers"].values()
    ]
    state = hooked.model.state_dict()
    assert all(torch.equal(v, state[f"resnet.{k}"]) for k, v in traced.model.state_dict().items())


class Controlled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.head(self.conv(x)) if x.sum() > 0 else x


@pytest.mark.parametrize(
    "model, message",
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU()),
         r"^layer 0 is followed by GroupNorm \(1\): "),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 1)),
         r"^layer 0 is followed by SiLU \(1\): "),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)),
         r"^layer 0 is followed by BatchNorm2d \(1\) without running statistics: "),
        (Controlled(), r"^cannot tell what follows layer conv: Controlled \(the model\) does not "
         "trace with torch.fx"),
    ],
)  # fmt: skip
def test_a_layer_the_solver_cannot_take_is_refused_by_name_in_one_line(model, message):
    with pytest.raises(AccelDetError, match=message) as error:
        compress(model, batches(count=1), speedup=2.0, progress=False)
    assert "\n" not in str(error.value)


def test_grouped_and_dilated_convs_are_left_as_they_are_and_named(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.SiLU(),  # left alone: any follower
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
    ).eval()  # fmt: skip
    with caplog.at_level("INFO", logger="accel_det.solver.targets"):
        result = compress(model, batches(), speedup=1.5, method="asym", schedule=SHORT)
    assert result.plan["left_as_they_are"] == {"2": "grouped (4 groups)", "4": "dilated (2, 2)"}
    assert "2 is left as it is: grouped" in caplog.text
    assert result.model[2] is not model[2] and torch.equal(result.model[2].weight, model[2].weight)
    assert isinstance(result.model[6], FactorizedConv2d)


def test_a_3d_plan_for_a_resnet_prices_its_1x1_convs_in_one_greedy():
    from accel_det.solver import SolverOptions, make_plan
    from accel_det.solver.mixed import make_layer_plan

    specs = find_targets(torchvision.models.resnet50(), (224, 224)).specs
    eigenvalues = {s.name: torch.linspace(1, 1e-3, s.out_channels) ** 2 for s in specs}
    options = SolverOptions(speedup=2.0, method="asym3d")
    with pytest.raises(AccelDetError, match="impossible even with spatial rank 1"):
        make_plan(specs, eigenvalues, options)  # the paper's sqrt(r) each: 1x1 convs get sqrt(2)
    plan = make_layer_plan(specs, eigenvalues, options)
    assert plan["theoretical_speedup"] == pytest.approx(2.0, rel=0.02)
    layers = plan["layers"]
    assert layers["layer1.0.conv2"]["structure"] in ("spatial_channel", "spatial")
    assert layers["layer1.0.conv3"]["structure"] in ("channel", "original")
    assert layers["conv1"]["structure"] == "original" and plan["skip"] == ["conv1"]
