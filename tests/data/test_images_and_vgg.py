"""Unit tests of the ImageNet-side library: image folders, preprocessing, VGG-16 loading, top-k
errors, the fine-tuning sampler. Fast: tiny generated images, a width-1/8 VGG-16."""

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from accel_det.data import (
    crop_transform,
    eval_transform,
    labeled_images,
    list_images,
    make_image_folder,
    normalize,
    read_class_list,
    sample_images,
)
from accel_det.data.synthetic import write_class_list
from accel_det.errors import AccelDetError
from accel_det.models.vgg import (
    factorized_key,
    infer_vgg16_config,
    load_checked,
    load_vgg16,
    vgg16,
)
from accel_det.workflows.imagenet.evaluate import (
    correct_counts,
    eval_loader,
    evaluate,
    format_results,
)
from accel_det.workflows.imagenet.training import EpochBatchSampler


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_image_folder(str(root), num_classes=4, images_per_class=3, size=40)
    return root


def test_list_images_tree_and_flat(tree, tmp_path):
    files = list_images(str(tree))
    assert len(files) == 12 and files == sorted(files) and files[0].startswith("class_00" + os.sep)
    make_image_folder(
        str(tmp_path / "flat"), num_classes=2, images_per_class=2, size=24, layout="flat"
    )
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    (tmp_path / "flat" / ".hidden.jpg").write_bytes(b"")
    assert list_images(str(tmp_path / "flat")) == [
        "img_0000.jpg",
        "img_0001.png",
        "img_0002.jpg",
        "img_0003.png",
    ]
    with pytest.raises(AccelDetError, match="image folder not found"):
        list_images(str(tmp_path / "missing"))


def test_preprocessing_is_torchvision_vgg16(tree):
    from torchvision.models import VGG16_Weights

    from accel_det.data.images import read_rgb

    image = read_rgb(str(tree / "class_01" / "img_0003.png")).resize((300, 260))
    expected = VGG16_Weights.IMAGENET1K_V1.transforms()(image)
    assert torch.equal(eval_transform()(image), expected)
    assert torch.equal(normalize(crop_transform()(image)), expected)
    with pytest.raises(AccelDetError, match="crop"):
        eval_transform(resize=32, crop=64)


def test_sample_images_seeded_and_skips_unreadable(tree, tmp_path, caplog):
    transform = crop_transform(36, 32)
    a = sample_images(str(tree), 5, seed=3, transform=transform, progress=False)
    b = sample_images(str(tree), 5, seed=3, transform=transform, progress=False)
    c = sample_images(str(tree), 5, seed=4, transform=transform, progress=False)
    assert a.files == b.files and torch.equal(a.images, b.images) and a.files != c.files
    assert a.images.shape == (5, 3, 32, 32) and a.images.dtype == torch.uint8
    batches = list(a.batches(2, normalize))
    assert [len(x["images"]) for x in batches] == [2, 2, 1] and batches[2]["indices"].tolist() == [
        4
    ]

    # an unreadable file that the seed draws is skipped with a warning, counted, and replaced
    broken = tmp_path / "broken"
    make_image_folder(str(broken), num_classes=2, images_per_class=3, size=24, layout="flat")
    (broken / "img_0002.jpg").write_bytes(b"not a jpeg")
    seed = next(s for s in range(100) if 2 in np.random.default_rng(s).permutation(6)[:4])
    with caplog.at_level(logging.WARNING):
        sample = sample_images(str(broken), 4, seed=seed, transform=transform, progress=False)
    assert (
        sample.skipped == ["img_0002.jpg"]
        and len(sample.files) == 4
        and "img_0002.jpg" not in sample.files
    )
    assert "skipping unreadable image" in caplog.text and sample.record()["skipped_unreadable"] == 1
    with pytest.raises(
        AccelDetError, match=r"found 6 images .* only 5 are readable \(1 unreadable\)"
    ):
        sample_images(str(broken), 6, seed=0, transform=transform, progress=False)
    with pytest.raises(AccelDetError, match="found 6 images in .*, fewer than the 7 asked for"):
        sample_images(str(broken), 7, seed=0, transform=transform, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AccelDetError, match="no images"):
        sample_images(str(tmp_path / "empty"), 1, seed=0, transform=transform, progress=False)


def test_sample_images_from_an_image_list(tree, tmp_path):
    """--image-list: paths relative to the folder, with or without extension (VOC ids); the
    first word of a line counts, blank and # lines are skipped."""
    transform = crop_transform(36, 32)
    listed = tmp_path / "list.txt"
    listed.write_text("class_00/img_0000\nclass_01/img_0003.png\n\n# note\nclass_02/img_0006 1\n")
    sample = sample_images(
        str(tree), 3, seed=0, transform=transform, progress=False, image_list=str(listed)
    )
    assert sorted(sample.files) == [
        os.path.join("class_00", "img_0000.jpg"),
        os.path.join("class_01", "img_0003.png"),
        os.path.join("class_02", "img_0006.jpg"),
    ]
    assert sample.record()["image_list"] == str(listed) and sample.found == 3
    with pytest.raises(
        AccelDetError, match=r"found 3 images in .* \(listed in .*list.txt\), fewer"
    ):
        sample_images(str(tree), 4, seed=0, transform=transform, image_list=str(listed))
    listed.write_text("class_00/img_0000\nclass_00/nope\n")
    with pytest.raises(
        AccelDetError, match=r"1 of the 2 images listed in .* \(first: class_00/nope"
    ):
        sample_images(str(tree), 1, seed=0, transform=transform, image_list=str(listed))
    with pytest.raises(AccelDetError, match="image list not found"):
        sample_images(str(tree), 1, seed=0, transform=transform, image_list=str(tmp_path / "x"))


def test_the_sample_records_the_contents_of_its_files(tree, tmp_path):
    transform = crop_transform(36, 32)
    record = sample_images(str(tree), 12, seed=0, transform=transform, progress=False).record()
    copy, other = tmp_path / "copy", tmp_path / "other"
    shutil.copytree(tree, copy)
    make_image_folder(str(other), num_classes=4, images_per_class=3, size=40, seed=1)
    same = sample_images(str(copy), 12, seed=0, transform=transform, progress=False).record()
    changed = sample_images(str(other), 12, seed=0, transform=transform, progress=False).record()
    assert same["contents_sha256"] == record["contents_sha256"]
    assert changed["files_sha256"] == record["files_sha256"]  # the same names ...
    assert changed["contents_sha256"] != record["contents_sha256"]  # ... other bytes


def test_labeled_images_tree_and_label_files(tree, tmp_path):
    transform = eval_transform(40, 32)
    by_tree = labeled_images(str(tree), transform)
    assert by_tree.classes == ["class_00", "class_01", "class_02", "class_03"]
    assert sorted({label for _, label in by_tree.samples}) == [0, 1, 2, 3]

    flat = tmp_path / "flat"
    make_image_folder(
        str(flat),
        num_classes=4,
        images_per_class=3,
        size=40,
        layout="flat",
        label_file=str(tmp_path / "names.txt"),
    )
    make_image_folder(
        str(tmp_path / "flat2"),
        num_classes=4,
        images_per_class=3,
        size=40,
        layout="flat",
        label_file=str(tmp_path / "numbers.txt"),
        numeric_labels=True,
    )
    by_name = labeled_images(str(flat), transform, labels=str(tmp_path / "names.txt"))
    by_number = labeled_images(
        str(tmp_path / "flat2"), transform, labels=str(tmp_path / "numbers.txt")
    )
    assert (
        [label for _, label in by_name.samples]
        == [label for _, label in by_tree.samples]
        == [label for _, label in by_number.samples]
    )
    # the same generator seed gives the same pictures whatever the layout
    assert torch.equal(by_name[5][0], by_tree[5][0])

    # a Kaggle-style CSV: header, stems, the WordNet id first in the second column; a class list
    rows = ["ImageId,PredictionString"] + [
        f"img_{i:04d},class_{i // 3:02d} 1 2 3 4" for i in range(12)
    ]
    (tmp_path / "loc.csv").write_text("\n".join(rows) + "\n")
    write_class_list(str(tmp_path / "classes.txt"), 5)
    classes = read_class_list(str(tmp_path / "classes.txt"))
    by_csv = labeled_images(str(flat), transform, labels=str(tmp_path / "loc.csv"), classes=classes)
    assert [label for _, label in by_csv.samples] == [
        label for _, label in by_tree.samples
    ] and len(by_csv.classes) == 5

    (tmp_path / "one_column.txt").write_text("65\n970\n")
    with pytest.raises(AccelDetError, match="line 1: expected '<file> <label>'"):
        labeled_images(str(flat), transform, labels=str(tmp_path / "one_column.txt"))
    with pytest.raises(AccelDetError, match="has no class folders: pass a label file"):
        labeled_images(str(flat), transform)


def test_vgg16_config_inference_and_clear_mismatches(tmp_path):
    model = vgg16(num_classes=7, width=0.125)
    state = model.state_dict()
    assert infer_vgg16_config(state) == {"width": 0.125, "num_classes": 7}
    assert infer_vgg16_config(vgg16(width=1.0, init_weights=False).state_dict()) == {
        "width": 1.0,
        "num_classes": 1000,
    }
    rebuilt = load_vgg16(state)[0]
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in state.items())
    assert factorized_key(state) is None

    bad = dict(state)
    bad["features.5.weight"] = torch.zeros(16, 4, 3, 3)
    with pytest.raises(
        AccelDetError,
        match=(
            r"at layer conv2_1: features\.5\.weight has shape "
            r"\(16, 4, 3, 3\), the model expects \(16, 8, 3, 3\)"
        ),
    ):
        load_checked(vgg16(num_classes=7, width=0.125), bad, "weights x.pth")
    missing = {k: v for k, v in state.items() if k != "features.7.bias"}
    with pytest.raises(AccelDetError, match=r"at layer conv2_2: key features\.7\.bias is missing"):
        load_checked(vgg16(num_classes=7, width=0.125), missing)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(
        AccelDetError,
        match=r"key features\.0\.weight is missing \(expected shape \(64, 3, 3, 3\)\)",
    ):
        load_vgg16(str(tmp_path / "resnet.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage")
    with pytest.raises(AccelDetError, match="cannot read VGG-16 weights file"):
        load_vgg16(str(tmp_path / "garbage.pth"))


def test_topk_errors_and_table():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [0, 5, 1, 1, 1, 1]])
    labels = torch.tensor([0, 0, 2])
    # image 0: top-1 hit; image 1: label 0 is last (miss at 5); image 2: label 2 ties in the top 5
    assert correct_counts(logits, labels, (1, 5)).tolist() == [1.0, 2.0, 3.0]
    assert correct_counts(logits[:, :3], labels, (1, 5)).tolist() == [
        1.0,
        3.0,
        3.0,
    ]  # k > classes: all correct

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[: x.shape[0]]

    loader = [(torch.zeros(3, 1), labels, 1)]
    result = evaluate(Fixed(), loader, torch.device("cpu"), progress=False)
    assert result["images"] == 3 and result["skipped_unreadable"] == 1
    assert result["top1_error"] == pytest.approx(100 * 2 / 3) and result[
        "top5_error"
    ] == pytest.approx(100 / 3)
    table = format_results(
        {
            "a.pth": {"top1_error": 30.0, "top5_error": 10.0},
            "b.pth": {"top1_error": 28.5, "top5_error": 9.1},
        },
        "b.pth",
    )
    assert "+1.50" in table and "+0.90" in table and "err. ↑" in table


def test_epoch_sampler_shards_cover_every_image_and_resume():
    shards = [
        list(EpochBatchSampler(10, 2, epoch=1, seed=0, rank=r, world_size=3)) for r in range(3)
    ]
    indices = [i for shard in shards for batch in shard for i, _ in batch]
    assert sorted(set(indices)) == list(range(10)) and len(indices) == 12  # padded to 3 × 4
    full = list(EpochBatchSampler(10, 3, epoch=2, seed=5))
    assert list(EpochBatchSampler(10, 3, epoch=2, seed=5, skip=2)) == full[2:]
    assert full != list(EpochBatchSampler(10, 3, epoch=3, seed=5))
    assert EpochBatchSampler.micro_batches_per_epoch(10, 2, 3) == 2


def test_eval_loader_skips_unreadable(tree, tmp_path, caplog):
    import shutil

    root = tmp_path / "val"
    shutil.copytree(tree, root)
    (root / "class_02" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    dataset = labeled_images(str(root), eval_transform(40, 32))
    with caplog.at_level(logging.WARNING):
        batches = list(eval_loader(dataset, 4, 0))
    assert (
        sum(b[2] for b in batches) == 1
        and sum(len(b[1]) for b in batches if b[1] is not None) == 12
    )
    assert "broken.jpg" in caplog.text
