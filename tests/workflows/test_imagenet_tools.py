"""End-to-end tests of tools/compress_backbone.py, tools/eval_imagenet.py and
tools/finetune_imagenet.py on a generated 10-class image folder (20 images) and a random
width-1/8 VGG-16 saved to a file; resume equality; bad input.

The tools run as subprocesses (exit codes, stderr); quick bad-input cases run in-process through
the same ``run_tool`` entry point, which is what the command line calls.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_det.data import make_image_folder
from accel_det.models.vgg import load_vgg16, vgg16
from accel_det.utils.cli import run_tool
from tests.helpers import REPO, load_tool

SMALL = ["--resize", "64", "--crop", "56", "--workers", "0", "--no-progress"]
COMPRESS = [
    "--num-images",
    "20",
    "--samples-per-image",
    "5",
    "--speedup",
    "3",
    "--iterations",
    "3",
    *SMALL,
]
FINETUNE = ["--batch-size", "8", "--checkpoint-period", "2", "--log-period", "1", *SMALL]


# One thread per process: these models are tiny, and OpenMP threads that wait for a busy core make
# them up to 50 times slower on a loaded 2-core machine.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(tool, *args, timeout=300):
    env = dict(
        os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **THREADS
    )
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(REPO),
    )


def run_in_process(tool, argv, capsys):
    module = load_tool(tool)
    code = run_tool(module.main, module.build_parser(), [str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Images, random weights, and one uninterrupted compression (the reference for the others)."""
    root = tmp_path_factory.mktemp("backbone")
    make_image_folder(str(root / "images"), num_classes=10, images_per_class=2, size=72)
    torch.manual_seed(0)
    torch.save(vgg16(num_classes=10, width=0.125).state_dict(), root / "vgg16.pth")
    (root / "out").mkdir()
    result = run(
        "compress_backbone.py",
        "--weights",
        root / "vgg16.pth",
        "--images",
        root / "images",
        "--output",
        root / "out" / "vgg16_3x",
        *COMPRESS,
    )
    assert result.returncode == 0, result.stderr
    return {
        "root": root,
        "weights": root / "vgg16.pth",
        "images": root / "images",
        "out": root / "out" / "vgg16_3x",
        "compress": result,
    }


def test_compress_writes_weights_plan_plot_and_table(work):
    out, result = work["out"], work["compress"]
    state = torch.load(f"{out}.pth", weights_only=True)
    record = json.loads(Path(f"{out}.json").read_text())
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        not Path(f"{out}.checkpoint.pth").exists() and not Path(f"{out}.checkpoint.json").exists()
    )
    # the solver's plan itself, extended with how it was obtained
    assert record["method"] == "asym3d" and 2.8 < record["theoretical_speedup"] < 3.2
    assert record["layers"]["conv1_1"]["structure"] == "original"
    # asym3d layers are k×1 → 1×k → 1×1 where the split is worth its error, else k×k → 1×1; at
    # full rank d' = d the 1×1 layer is folded away
    structures = {
        n: (e["structure"], e["rank"] in (None, e["out_channels"]))
        for n, e in record["layers"].items()
        if n != "conv1_1"
    }
    assert set(structures.values()) <= {
        ("spatial", True), ("original", True), ("spatial_channel", False), ("channel", False)
    }  # fmt: skip
    assert sum(s in ("spatial", "spatial_channel") for s, _ in structures.values()) >= 3
    assert record["num_images"] == 20 and record["num_samples"]["conv3_1"] == 100
    assert record["options"]["num_images"] == 20 and record["preprocessing"]["center_crop"] == 56
    assert len(record["source_weights"]["sha256"]) == 64 and record["images"]["used"] == 20
    for entry in record["layers"].values():
        assert (
            0 < entry["pca_energy"] <= 1
            and entry["error"] is not None
            and entry["seconds"] is not None
        )
    assert any(k.endswith("expand.weight") for k in state) and "classifier.6.weight" in state
    # progress: one log line per layer, a table at the end
    assert (
        sum("conv" in line and "PCA energy=" in line for line in result.stderr.splitlines()) == 13
    )
    assert "PCA energy" in result.stdout and "total" in result.stdout and "conv5_3" in result.stdout


def test_plan_round_trip_matches_in_memory_result(work, tmp_path):
    """Building from the plan JSON and loading the .pth gives the in-memory model's outputs."""
    from accel_det.solver import SolverOptions
    from accel_det.workflows.imagenet.compress import CompressOptions, compress_model

    solver = SolverOptions(samples_per_image=5, speedup=3, schedule=((0.01, 3), (1.0, 3)))
    options = CompressOptions(
        weights=str(work["weights"]),
        images=str(work["images"]),
        output=str(tmp_path / "mem"),
        solver=solver,
        num_images=20,
        resize=64,
        crop=56,
        workers=0,
        progress=False,
        plot=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, record = compress_model(options)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    rebuilt, plan, _ = load_vgg16(str(tmp_path / "mem.pth"))  # finds mem.json next to it
    rebuilt.eval()
    explicit = load_vgg16(
        str(tmp_path / "mem.pth"), plan=json.loads((tmp_path / "mem.json").read_text())
    )[0].eval()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(rebuilt(x), expected) and torch.equal(explicit(x), expected)
        # the command line run made the same model
        cli, _, _ = load_vgg16(f"{work['out']}.pth")
        assert torch.allclose(cli.eval()(x), expected, rtol=1e-4, atol=1e-5)
    assert plan["layers"] == record["layers"]


def test_resume_after_interruption_is_bit_identical(work, tmp_path, capsys):
    out = tmp_path / "resumed"
    common = ["--weights", work["weights"], "--images", work["images"], "--output", out, *COMPRESS]
    stopped = run("compress_backbone.py", *common, "--stop-after", "conv3_1")
    assert stopped.returncode == 1 and "interrupted" in stopped.stderr
    assert (
        Path(f"{out}.checkpoint.pth").exists()
        and not Path(f"{out}.pth").exists()
        and not Path(f"{out}.json").exists()
    )

    code, err = run_in_process("compress_backbone", common, capsys)
    assert code == 2 and "pass --resume to continue it or --overwrite" in err
    code, err = run_in_process("compress_backbone", [*common, "--resume", "--seed", "1"], capsys)
    assert code == 2 and "was made with seed=0 (this run: 1)" in err

    resumed = run("compress_backbone.py", *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after conv1_1, conv1_2, conv2_1, conv2_2, conv3_1" in resumed.stderr
    assert (
        sum("PCA energy=" in line for line in resumed.stderr.splitlines()) == 8
    )  # only the layers left
    reference = torch.load(f"{work['out']}.pth", weights_only=True)
    state = torch.load(f"{out}.pth", weights_only=True)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert not Path(f"{out}.checkpoint.pth").exists()


def test_eval_plain_and_accelerated_with_baseline(work, tmp_path):
    record = tmp_path / "eval.json"
    result = run(
        "eval_imagenet.py",
        "--weights",
        f"{work['out']}.pth",
        "--val",
        work["images"],
        "--baseline",
        work["weights"],
        "--output",
        record,
        *SMALL,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "top-1 err. ↑ %" in result.stdout
        and "vgg16_3x.pth" in result.stdout
        and "vgg16.pth" in result.stdout
    )
    data = json.loads(record.read_text())
    models = data["models"]
    assert (
        models["vgg16_3x.pth"]["plan"].endswith("vgg16_3x.json")
        and models["vgg16.pth"]["plan"] is None
    )
    assert models["vgg16.pth"]["images"] == 20 and 0 <= models["vgg16.pth"]["top1_error"] <= 100
    increase = data["increase_of_error"]["vgg16_3x.pth"]["top5"]
    assert increase == pytest.approx(
        models["vgg16_3x.pth"]["top5_error"] - models["vgg16.pth"]["top5_error"]
    )

    # a flat folder with a label file (and an unreadable image) gives the same numbers
    flat = tmp_path / "flat"
    make_image_folder(
        str(flat),
        num_classes=10,
        images_per_class=2,
        size=72,
        layout="flat",
        label_file=str(tmp_path / "val.txt"),
    )
    (flat / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with open(tmp_path / "val.txt", "a") as f:
        f.write("zz_broken.jpg class_03\n")
    flat_result = run(
        "eval_imagenet.py",
        "--weights",
        work["weights"],
        "--val",
        flat,
        "--labels",
        tmp_path / "val.txt",
        "--output",
        tmp_path / "flat.json",
        *SMALL,
    )
    assert flat_result.returncode == 0, flat_result.stderr
    assert (
        "skipping unreadable image" in flat_result.stderr
        and "skipped 1 unreadable" in flat_result.stderr
    )
    flat_model = json.loads((tmp_path / "flat.json").read_text())["models"]["vgg16.pth"]
    assert flat_model["images"] == 20 and flat_model["skipped_unreadable"] == 1
    assert flat_model["top1_error"] == models["vgg16.pth"]["top1_error"]
    assert flat_model["top5_error"] == models["vgg16.pth"]["top5_error"]


def test_finetune_runs_logs_and_resumes_bit_identically(work, tmp_path, capsys):
    weights = f"{work['out']}.pth"  # the accelerated model; its plan is found next to it
    common = [
        "--weights",
        weights,
        "--train",
        work["images"],
        "--val",
        work["images"],
        "--max-iters",
        "6",
        *FINETUNE,
    ]
    full = run("finetune_imagenet.py", *common, "--output", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "full"
    assert {"model_final.pth", "model_final.json", "last_checkpoint.pth", "metrics.json"} <= set(
        os.listdir(out)
    )
    assert any(name.startswith("events.out.tfevents.") for name in os.listdir(out / "tensorboard"))
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [row["iteration"] for row in lines if "train/loss" in row] == [1, 2, 3, 4, 5, 6]
    assert any("val/top1_error" in row for row in lines)
    record = json.loads((out / "model_final.json").read_text())
    assert record["method"] == "asym3d" and record["finetune"]["iterations"] == 6
    assert (
        record["finetune"]["config"]["lr"] == 1e-5
        and record["finetune"]["final_evaluation"]["images"] == 20
    )
    assert "iter 6/6" in full.stderr

    # interrupted after iteration 5 (last checkpoint at 4, inside epoch 2), then resumed
    stopped = run(
        "finetune_imagenet.py", *common, "--output", tmp_path / "resumed", "--stop-after", "5"
    )
    assert stopped.returncode == 1 and not (tmp_path / "resumed" / "model_final.pth").exists()
    code, err = run_in_process(
        "finetune_imagenet", [*common, "--output", tmp_path / "resumed"], capsys
    )
    assert code == 2 and "--resume to continue it" in err
    resumed = run("finetune_imagenet.py", *common, "--output", tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "at iteration 4" in resumed.stderr
    a = torch.load(out / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed_lines = [
        json.loads(line)
        for line in (tmp_path / "resumed" / "metrics.json").read_text().splitlines()
    ]
    assert [row["iteration"] for row in resumed_lines if "train/loss" in row] == [1, 2, 3, 4, 5, 6]

    # the fine-tuned pair evaluates like any other model
    model, plan, _ = load_vgg16(str(out / "model_final.pth"))
    assert (
        plan is not None
        and plan["layers"] == json.loads(Path(f"{work['out']}.json").read_text())["layers"]
    )
    assert not torch.equal(
        a["classifier.6.weight"], torch.load(weights, weights_only=True)["classifier.6.weight"]
    )


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_finetune_ddp_two_processes_on_cpu(work, tmp_path):
    """tools/finetune_imagenet.py under torchrun; that two processes compute what one does:
    test_finetune_two_processes_equal_one_process."""
    torchrun = (
        str(Path(sys.executable).parent / "torchrun")
        if (Path(sys.executable).parent / "torchrun").exists()
        else "torchrun"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), **THREADS)
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO / "tools" / "finetune_imagenet.py"),
            "--weights",
            work["weights"],
            "--train",
            work["images"],
            "--output",
            tmp_path / "ddp",
            "--max-iters",
            "2",
            "--device",
            "cpu",
            *map(str, FINETUNE),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "model_final.json").read_text())
    assert record["finetune"]["world_size"] == 2 and record["finetune"]["iterations"] == 2
    assert "2 process(es) x 4 x 1 accumulation" in result.stderr


def _finetune_without_dropout(weights, images, output, iterations, lr) -> int:
    """Fine-tune the test's VGG-16 (dropout 0) with a global batch of 8 for ``iterations``, in one
    process or, started by accel_det.utils.launch, as one of a gloo group."""
    from accel_det.data import labeled_images, train_transform
    from accel_det.utils.dist import init_distributed, shutdown
    from accel_det.utils.timing import num_threads
    from accel_det.workflows.imagenet.finetune import FinetuneConfig, finetune

    info = init_distributed("cpu")
    try:
        model = vgg16(num_classes=10, width=0.125, dropout=0.0)
        model.load_state_dict(torch.load(weights, weights_only=True))
        config = FinetuneConfig(
            lr=lr,
            batch_size=8,
            max_iters=iterations,
            eval_period=0,
            resize=64,
            crop=56,
            workers=0,
        )
        train = labeled_images(str(images), train_transform(config.augment, 64, 56))
        with num_threads(1):
            finetune(model, train, str(output), config, info, progress=False)
    finally:
        shutdown()
    return 0


def test_finetune_two_processes_equal_one_process(work, tmp_path):
    """Two gloo processes with 4 images each give the weights of one process with 8 after 4
    iterations (20 images: 3 per epoch, the third a batch of 4 split 2 + 2, the fourth in the
    next epoch): the epoch's order comes from (seed, epoch) and is split rank::2, so that each
    iteration's images are the same 8 (4) in both runs, each image's crop and flip from (seed,
    epoch, image), and DDP averages the two processes' mean-loss gradients, which is the mean over
    all 8. Dropout, drawn per process, is off (dropout 0) for the comparison.

    Tolerance: the same arithmetic but float32 sums in another order (a batch of 4 vs 8 in the
    convolutions' backward, the all-reduce), ~1e-7 relative per gradient, carried through 4
    momentum steps; so the weights' difference is asserted below 1e-4 of what fine-tuning moved
    them (measured: 4e-6, 1.2e-7 against 0.03). Without DDP's averaging (0.059), or with the
    epoch split into contiguous halves (other images in each iteration: 0.028), they differ by as
    much as fine-tuning moved them."""
    from accel_det.utils.launch import launch

    lr, iterations = 0.05, 4  # a large lr: updates far above float noise
    args = (str(work["weights"]), str(work["images"]))
    assert launch(_finetune_without_dropout, 2, args + (str(tmp_path / "two"), iterations, lr)) == 0
    assert _finetune_without_dropout(*args, tmp_path / "one", iterations, lr) == 0
    start = torch.load(work["weights"], weights_only=True)
    one = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)
    two = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)
    record = json.loads((tmp_path / "two" / "model_final.json").read_text())
    assert record["finetune"]["world_size"] == 2 and record["finetune"]["iterations"] == 4
    assert set(one) == set(two) == set(start)
    moved = torch.cat([(one[k] - start[k]).flatten() for k in start]).norm()
    apart = torch.cat([(two[k] - one[k]).flatten() for k in start]).norm()
    # 1e-4 of the weights: a thousand times float32's resolution of them
    assert moved > 1e-4 * torch.cat([v.flatten() for v in start.values()]).norm()
    assert apart <= 1e-4 * moved, (float(apart), float(moved))


# --------------------------------------------------------------------------- bad input


def _no_outputs(folder, prefix):
    return (
        not [p for p in Path(folder).iterdir() if p.name.startswith(prefix)]
        if Path(folder).exists()
        else True
    )


def test_bad_input_command_line(work, tmp_path):
    """Real processes: one line on stderr, exit code 2, nothing written."""
    missing = run(
        "compress_backbone.py",
        "--weights",
        tmp_path / "nope.pth",
        "--images",
        work["images"],
        "--output",
        tmp_path / "x",
        *COMPRESS,
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip()
        == f"error: VGG-16 weights file not found: {tmp_path / 'nope.pth'}"
    )
    (tmp_path / "empty").mkdir()
    empty = run(
        "compress_backbone.py",
        "--weights",
        work["weights"],
        "--images",
        tmp_path / "empty",
        "--output",
        tmp_path / "x",
        *COMPRESS,
    )
    assert (
        empty.returncode == 2
        and "no images (JPEG/PNG/...) found in" in empty.stderr.splitlines()[-1]
    )
    assert _no_outputs(tmp_path, "x.")
    plan_mismatch = run(
        "eval_imagenet.py",
        "--weights",
        work["weights"],
        "--plan",
        f"{work['out']}.json",
        "--val",
        work["images"],
        *SMALL,
    )
    assert plan_mismatch.returncode == 2 and len(plan_mismatch.stderr.strip().splitlines()) == 1
    assert (
        "at layer conv1_2" in plan_mismatch.stderr
        and "features.2.vertical.weight is missing" in plan_mismatch.stderr
    )


def _compress_args(work, output, **changes):
    """The reference run's arguments; ``changes`` come last, and argparse keeps the last value."""
    argv = ["--weights", work["weights"], "--images", work["images"], "--output", output, *COMPRESS]
    return argv + [x for k, v in changes.items() for x in (k, v)]


def test_bad_input_compress(work, tmp_path, capsys):
    out = tmp_path / "o"
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    torch.save(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)},
        tmp_path / "resnet.pth",
    )
    state = torch.load(work["weights"], weights_only=True)
    state["features.10.weight"] = torch.zeros(32, 8, 3, 3)
    torch.save(state, tmp_path / "wrong_shape.pth")
    cases = [
        ({"--weights": tmp_path / "garbage.pth"}, "cannot read VGG-16 weights file"),
        (
            {"--weights": tmp_path / "resnet.pth"},
            "key features.0.weight is missing (expected shape (64, 3, 3, 3))",
        ),
        (
            {"--weights": tmp_path / "wrong_shape.pth"},
            "at layer conv3_1: features.10.weight has shape "
            "(32, 8, 3, 3), the model expects (32, 16, 3, 3)",
        ),
        ({"--weights": f"{work['out']}.pth"}, "is already an accelerated VGG-16"),
        ({"--num-images": "50"}, "fewer than the 50 asked for"),
        ({"--num-images": "10"}, "give 50 responses of conv4_1, fewer than its 64 filters"),
        ({"--output": work["out"]}, "already exists; pass --overwrite"),
        ({"--output": Path(work["weights"]) / "x"}, "is not a folder"),
        ({"--stop-after": "conv9_9"}, "--stop-after conv9_9: no such layer"),
        ({"--speedup": "500"}, "speedup 500 is impossible"),
    ]
    for changes, message in cases:
        code, err = run_in_process(
            "compress_backbone", _compress_args(work, out, **changes), capsys
        )
        assert code == 2 and message in err, (changes, err)
        assert len(err.strip().splitlines()) == 1, err
        assert _no_outputs(tmp_path, "o."), list(tmp_path.iterdir())


def test_bad_input_unwritable_output(work, tmp_path, capsys):
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o500)
    elif os.path.isdir("/sys/kernel"):
        folder = Path("/sys/kernel")  # root may write anywhere but not there
    else:
        pytest.skip("no unwritable folder for root here")
    try:
        code, err = run_in_process(
            "compress_backbone", _compress_args(work, folder / "new" / "o"), capsys
        )
        assert code == 2 and "not writable" in err, err
        code, err = run_in_process(
            "eval_imagenet",
            [
                "--weights",
                work["weights"],
                "--val",
                work["images"],
                "--output",
                folder / "e.json",
                *SMALL,
            ],
            capsys,
        )
        assert code == 2 and "not writable" in err, err
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o700)


def test_bad_input_eval_and_finetune(work, tmp_path, capsys):
    flat = tmp_path / "flat"
    make_image_folder(str(flat), num_classes=2, images_per_class=1, size=32, layout="flat")
    shutil.copy(f"{work['out']}.pth", tmp_path / "lonely.pth")  # accelerated, no plan next to it
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model_final.pth").write_bytes(b"")
    cases = [
        (
            "eval_imagenet",
            ["--weights", work["weights"], "--val", flat],
            "has no class folders: pass a label file",
        ),
        (
            "eval_imagenet",
            ["--weights", tmp_path / "lonely.pth", "--val", work["images"]],
            "pass its plan with --plan",
        ),
        (
            "eval_imagenet",
            ["--weights", work["weights"], "--val", tmp_path / "nowhere"],
            "image folder not found",
        ),
        (
            "eval_imagenet",
            ["--weights", work["weights"], "--plan", work["weights"], "--val", work["images"]],
            "cannot read plan file",
        ),
        (
            "finetune_imagenet",
            [
                "--weights",
                work["weights"],
                "--train",
                work["images"],
                "--output",
                tmp_path / "final",
            ],
            "model_final.pth already exists; pass --overwrite",
        ),
        (
            "finetune_imagenet",
            [
                "--weights",
                work["weights"],
                "--train",
                work["images"],
                "--output",
                tmp_path / "ft",
                "--batch-size",
                "7",
                "--accumulation",
                "2",
            ],
            "is not divisible by",
        ),
    ]
    for tool, argv, message in cases:
        code, err = run_in_process(tool, [*argv, *SMALL], capsys)
        assert code == 2 and message in err, (tool, argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ft").exists()


def test_compress_with_fc_layers_meets_the_whole_network_speedup(work, tmp_path):
    """--fc: fc6/fc7 of the classifier factorized under the same budget, and the outputs load."""
    out = tmp_path / "fc"
    result = run("compress_backbone.py", "--weights", work["weights"], "--images", work["images"],
                 "--output", out, *COMPRESS, "--fc")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.with_suffix(".json").read_text())
    assert 3.0 <= record["theoretical_speedup_network"] <= 3.06
    assert (
        record["layers"]["fc6"]["structure"] == "channel" and record["layers"]["fc6"]["rank"] < 512
    )
    model, plan, _ = load_vgg16(str(out.with_suffix(".pth")))
    assert type(model.classifier[0]).__name__ == "FactorizedLinear"
    assert plan["layers"]["fc6"]["error"] is not None
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 56, 56)).shape == (2, 10)
