"""tools/compress_backbone.py data-parallel under torch.distributed (gloo on the CPU): two
processes, each reading its shard of the images, make the plan of one process (identical ranks, the
same images drawn, even with unreadable files among them) and its weights within float tolerance;
a distributed run stopped after a layer resumes bit-identically (under --num-gpus, the tool's own
launcher); an error is one line from the whole group."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_det.data import make_image_folder
from accel_det.models.vgg import load_vgg16, vgg16
from tests.workflows.test_imagenet_tools import REPO, SMALL, THREADS, run, run_in_process

TORCHRUN = Path(sys.executable).parent / "torchrun"
ARGS = [
    "--num-images",
    "16",
    "--samples-per-image",
    "10",
    "--speedup",
    "3",
    "--iterations",
    "3",
    "--device",
    "cpu",
    *SMALL,
    "--no-plot",
]

pytestmark = pytest.mark.skipif(
    not TORCHRUN.exists(), reason="torchrun not installed next to the Python"
)


def torchrun(*args, nproc=2, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), **THREADS)
    return subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            str(REPO / "tools" / "compress_backbone.py"),
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(REPO),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """16 readable images and 2 unreadable ones, random width-1/8 weights, and the same compression
    by one process and by two (torchrun)."""
    root = tmp_path_factory.mktemp("distributed")
    make_image_folder(str(root / "images"), num_classes=4, images_per_class=4, size=72)
    for name in ("class_00/broken.jpg", "class_02/truncated.png"):
        (root / "images" / name).write_bytes(b"\xff\xd8 not an image")
    torch.manual_seed(0)
    torch.save(vgg16(num_classes=4, width=0.125).state_dict(), root / "vgg16.pth")
    common = ["--weights", root / "vgg16.pth", "--images", root / "images", *ARGS]
    single = run("compress_backbone.py", *common, "--output", root / "single")
    assert single.returncode == 0, single.stderr
    double = torchrun(*common, "--output", root / "double")
    assert double.returncode == 0, double.stderr[-3000:]
    return {"root": root, "common": common, "single": single, "double": double}


def _outputs(prefix):
    return json.loads(Path(f"{prefix}.json").read_text()), torch.load(
        f"{prefix}.pth", weights_only=True
    )


def test_two_processes_make_the_plan_of_one(runs):
    root = runs["root"]
    one, _ = _outputs(root / "single")
    two, _ = _outputs(root / "double")
    assert one["world_size"] == 1 and two["world_size"] == 2
    # the same images drawn (the unreadable ones skipped and replaced alike), the same samples
    assert two["images"] == one["images"] and one["images"]["used"] == 16
    assert two["num_images"] == one["num_images"] == 16 and two["num_samples"] == one["num_samples"]
    for name, entry in one["layers"].items():
        other = two["layers"][name]
        assert (other["structure"], other["rank"], other["spatial_rank"]) == (
            entry["structure"],
            entry["rank"],
            entry["spatial_rank"],
        ), name
        assert other["pca_energy"] == pytest.approx(entry["pca_energy"], rel=1e-4), name
        if entry["error"] is not None:
            assert abs(other["error"] - entry["error"]) < 1e-3, name
    assert two["theoretical_speedup"] == one["theoretical_speedup"]
    # Batches of 8 per process instead of one of 16 round convolutions differently; the solver
    # carries that float32 noise through 12 layers (with 5 samples per image, 80 samples for 64
    # filters, it grows to 10 %: the same as one process run with --batch-size 8). Compare what
    # the two networks compute, well inside their approximation error (~10 %).
    single, _, _ = load_vgg16(str(root / "single.pth"))
    double, _, _ = load_vgg16(str(root / "double.pth"))
    x = torch.rand(4, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = single.eval()(x)
        assert float((double.eval()(x) - reference).norm() / reference.norm()) < 1e-2
    # process 0 alone wrote, logged and printed: one table, one line per layer, no checkpoint left
    assert runs["double"].stdout.count("PCA energy") == 1
    assert sum("PCA energy=" in line for line in runs["double"].stderr.splitlines()) == 13
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("double")) == [
        "double.json",
        "double.pth",
    ]


def test_distributed_run_resumes_bit_identically(runs):
    """Stopped after conv3_1 under torchrun, resumed by the tool's own launcher (--num-gpus 2
    --device cpu): the weights of the uninterrupted torchrun run, bit for bit."""
    root, common = runs["root"], runs["common"]
    stopped = torchrun(*common, "--output", root / "resumed", "--stop-after", "conv3_1")
    assert stopped.returncode != 0 and "interrupted" in stopped.stderr
    saved = torch.load(root / "resumed.checkpoint.pth", weights_only=True)
    assert saved["done"] == sorted(["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"])
    resumed = run(
        "compress_backbone.py", *common, "--output", root / "resumed", "--resume", "--num-gpus", "2"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after conv1_1, conv1_2, conv2_1, conv2_2, conv3_1" in resumed.stderr
    record, state = _outputs(root / "resumed")
    reference_record, reference = _outputs(root / "double")
    assert record["world_size"] == 2 and state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert (
        not (root / "resumed.checkpoint.pth").exists()
        and not (root / "resumed.checkpoint.json").exists()
    )


def test_an_error_in_a_group_is_one_line(runs, tmp_path, capsys):
    """Both processes refuse the existing output; process 0 alone says so."""
    root = runs["root"]
    before = (root / "single.pth").read_bytes()
    result = run(
        "compress_backbone.py", *runs["common"], "--output", root / "single", "--num-gpus", "2"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: output {root / 'single.pth'} already exists; pass --overwrite to replace it"
    ]
    assert (root / "single.pth").read_bytes() == before
    if not torch.cuda.is_available():
        code, err = run_in_process(
            "compress_backbone",
            [*runs["common"], "--output", tmp_path / "x", "--num-gpus", "2", "--device", "cuda"],
            capsys,
        )
        assert code == 2 and err.strip().splitlines() == [
            "error: --num-gpus 2 needs 2 GPUs and --device auto or cuda (found 0 GPU(s), --device "
            "cuda); --device cpu starts CPU processes"
        ]
