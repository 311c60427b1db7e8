"""``compress_backbone.py --resume`` continues only what this run would make: a checkpoint made from
other image bytes (another folder with the same file names, or images regenerated in place), other
weights or other plan options is refused with one line, before the first pass over the images."""

import shutil

import pytest
import torch

from accel_det.data import list_images, make_image_folder
from accel_det.models.vgg import vgg16
from tests.workflows.test_imagenet_tools import COMPRESS, run_in_process, work  # noqa: F401

RANK_OPTIONS = {"rank-selection": [], "no-rank-selection": ["--no-rank-selection"]}


def stop(work, images, out, capsys, *extra):  # noqa: F811
    """A run stopped after conv1_2 (the first solved layer): its checkpoint is left."""
    argv = ["--weights", work["weights"], "--images", images, "--output", out, *COMPRESS, *extra]
    code, err = run_in_process("compress_backbone", [*argv, "--stop-after", "conv1_2"], capsys)
    assert code == 1 and (out.parent / f"{out.name}.checkpoint.pth").exists(), err
    return argv


def refused(argv, capsys, message):
    code, err = run_in_process("compress_backbone", [*argv, "--resume"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    return lines[0]


@pytest.mark.parametrize("ranks", RANK_OPTIONS)
def test_another_folder_with_the_same_file_names_is_refused(work, tmp_path, capsys, ranks):  # noqa: F811
    other = tmp_path / "other"
    make_image_folder(str(other), num_classes=10, images_per_class=2, size=72, seed=1)
    assert list_images(str(other)) == list_images(str(work["images"]))  # same names, other bytes
    argv = stop(work, work["images"], tmp_path / "run", capsys, *RANK_OPTIONS[ranks])
    argv[argv.index("--images") + 1] = other
    refused(argv, capsys, "was made from other images")


@pytest.mark.parametrize("ranks", RANK_OPTIONS)
def test_images_regenerated_in_place_are_refused(work, tmp_path, capsys, ranks):  # noqa: F811
    images = tmp_path / "images"
    shutil.copytree(work["images"], images)
    argv = stop(work, images, tmp_path / "run", capsys, *RANK_OPTIONS[ranks])
    make_image_folder(str(images), num_classes=10, images_per_class=2, size=72, seed=1)
    refused(argv, capsys, "was made from other images")


def test_one_changed_byte_of_one_image_is_refused(work, tmp_path, capsys):  # noqa: F811
    images = tmp_path / "images"
    shutil.copytree(work["images"], images)
    argv = stop(work, images, tmp_path / "run", capsys, "--no-rank-selection")
    victim = images / next(n for n in list_images(str(images)) if n.endswith(".jpg"))
    data = bytearray(victim.read_bytes())
    assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\x00"
    data[15] ^= 0x01  # JFIF's horizontal pixel density: the same size and the same pixels
    victim.write_bytes(bytes(data))
    refused(argv, capsys, "was made from other images")


def test_other_weights_of_the_same_architecture_are_refused(work, tmp_path, capsys):  # noqa: F811
    argv = stop(work, work["images"], tmp_path / "run", capsys, "--no-rank-selection")
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save(vgg16(num_classes=10, width=0.125).state_dict(), other)
    argv[argv.index("--weights") + 1] = other
    refused(argv, capsys, "was made from other weights")


@pytest.mark.parametrize(
    "change, message",
    [
        (["--no-rank-selection"], "rank_selection=True (this run: False)"),
        (["--speedup", "2.5"], "speedup=3.0 (this run: 2.5)"),
        (["--seed", "1"], "seed=0 (this run: 1)"),
        (["--samples-per-image", "6"], "samples_per_image=5 (this run: 6)"),
        (["--method", "asym"], "method='asym3d' (this run: 'asym')"),
    ],
)
def test_other_plan_options_are_refused(work, tmp_path, capsys, change, message):  # noqa: F811
    argv = stop(work, work["images"], tmp_path / "run", capsys)
    refused([*argv, *change], capsys, message)


def test_the_same_inputs_resume(work, tmp_path, capsys):  # noqa: F811
    images = tmp_path / "images"
    shutil.copytree(work["images"], images)  # another folder, the same bytes: resumes
    argv = stop(work, work["images"], tmp_path / "run", capsys, "--no-rank-selection")
    argv[argv.index("--images") + 1] = images
    code, err = run_in_process("compress_backbone", [*argv, "--resume"], capsys)
    assert code == 0, err
