"""Data sets on small files the tests write, the shared transform, synthetic scenes and splits."""

import numpy as np
import pytest
import torch
from PIL import Image

from prune.data import DataSpec, build_dataset, inner_outer_split
from prune.data.synthetic import SyntheticScenes
from prune.data.synthetic_hard import WET, HardSyntheticScenes, looks
from prune.data.transforms import IMAGENET_MEAN, SegTransform
from runner.errors import EdgesegError

SIZE = 16


def _write_pair(image_path, label_path, label: np.ndarray, colour=(124, 116, 104)):
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*label.shape, 3), colour, dtype=np.uint8)).save(image_path)
    Image.fromarray(label.astype(np.uint8)).save(label_path)


def _ade20k(root, raw: np.ndarray, split_folder="training", stem="ADE_train_00000001"):
    base = root / "ADEChallengeData2016"
    _write_pair(base / "images" / split_folder / f"{stem}.jpg", base / "annotations" / split_folder / f"{stem}.png", raw)


def _cityscapes(root, raw: np.ndarray, split="train", city="aachen", stem="aachen_000000_000019"):
    _write_pair(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        raw,
    )


def _raw_label(values):
    """A SIZE x SIZE label whose rows cycle through `values`."""
    return np.array([values[i % len(values)] for i in range(SIZE)])[:, None].repeat(SIZE, 1)


def test_ade20k_maps_zero_to_ignore_and_shifts_classes(tmp_path):
    _ade20k(tmp_path, _raw_label([0, 1, 150, 75]))
    data = build_dataset(f"ade20k:{tmp_path}", "train", SIZE, augment=False)
    image, label = data[0]
    assert data.num_classes == 150 and len(data) == 1
    assert label.dtype == torch.int64 and label.shape == (SIZE, SIZE)
    assert label[:4, 0].tolist() == [255, 0, 149, 74]
    # a mean-coloured image normalises to about zero (JPEG rounds a little)
    assert image.shape == (3, SIZE, SIZE) and image.abs().max() < 0.1


def test_ade20k_accepts_the_challenge_folder_itself_and_the_val_split(tmp_path):
    _ade20k(tmp_path, _raw_label([3]), split_folder="validation", stem="ADE_val_00000001")
    data = build_dataset(f"ade20k:{tmp_path / 'ADEChallengeData2016'}", "val", SIZE)
    assert data[0][1].unique().tolist() == [2]


def test_ade20k_wrong_layout_names_the_expected_folders(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    with pytest.raises(EdgesegError) as err:
        build_dataset(f"ade20k:{tmp_path}", "train", SIZE)
    assert "annotations/training" in err.value.problem and "images/training" in err.value.problem
    with pytest.raises(EdgesegError, match="does not exist"):
        build_dataset(f"ade20k:{tmp_path / 'nowhere'}", "train", SIZE)


def test_ade20k_label_outside_class_range_names_file_and_value_when_loaded(tmp_path):
    _ade20k(tmp_path, _raw_label([1, 200]))
    data = build_dataset(f"ade20k:{tmp_path}", "train", SIZE)  # listing does not read labels
    with pytest.raises(EdgesegError) as err:
        data[0]
    assert "ADE_train_00000001.png" in err.value.problem and "value 200" in err.value.problem


def test_unreadable_image_names_the_file(tmp_path):
    _ade20k(tmp_path, _raw_label([1]))
    image = tmp_path / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000001.jpg"
    image.write_bytes(b"truncated")
    with pytest.raises(EdgesegError, match="ADE_train_00000001.jpg could not be read"):
        build_dataset(f"ade20k:{tmp_path}", "train", SIZE)[0]


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    _cityscapes(tmp_path, _raw_label([7, 26, 0, 33, 255, 1]))
    data = build_dataset(f"cityscapes:{tmp_path}", "train", SIZE, augment=False)
    assert data.num_classes == 19
    assert data[0][1][:6, 0].tolist() == [0, 13, 255, 18, 255, 255]


def test_cityscapes_errors_name_folders_and_bad_values(tmp_path):
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(EdgesegError) as err:
        build_dataset(f"cityscapes:{tmp_path}", "val", SIZE)
    assert "gtFine/val" in err.value.problem
    _cityscapes(tmp_path, _raw_label([7, 40]), split="val")
    with pytest.raises(EdgesegError) as err:
        build_dataset(f"cityscapes:{tmp_path}", "val", SIZE)[0]
    assert "aachen_000000_000019_gtFine_labelIds.png" in err.value.problem and "value 40" in err.value.problem


def test_transform_crops_a_square_and_pads_labels_with_ignore():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    label = np.arange(40)[None, :].repeat(20, 0)
    img, lab = SegTransform(10)(image, label)
    assert img.shape == (3, 10, 10) and lab.shape == (10, 10)
    assert lab[0].tolist() == list(range(11, 31, 2))  # centre crop of the half-size label
    torch.manual_seed(0)
    _, small = SegTransform(10, train=True, scale_range=(0.5, 0.5))(image, label)
    assert (small[5:] == 255).all() and (small[:5] != 255).all()  # 5 rows of image, the rest padding


def test_training_transform_flips_some_images():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    label = np.arange(8)[None, :].repeat(8, 0)
    torch.manual_seed(0)
    first_columns = {int(SegTransform(8, train=True)(image, label)[1][0, 0]) for _ in range(20)}
    assert first_columns == {0, 7}


def test_synthetic_scenes_are_deterministic_and_sized():
    scenes = SyntheticScenes(4, 40, num_classes=5, seed=3)
    image, label = scenes[2]
    again = SyntheticScenes(4, 40, num_classes=5, seed=3)[2]
    assert torch.equal(image, again[0]) and torch.equal(label, again[1])
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32 and label.shape == (40, 40)
    assert not torch.equal(image, scenes[1][0])
    assert not torch.equal(image, SyntheticScenes(4, 40, num_classes=5, seed=4)[2][0])
    assert not torch.equal(image, SyntheticScenes(4, 40, num_classes=5, seed=3, split="val")[2][0])


def test_synthetic_scenes_use_every_class_and_nothing_else():
    scenes = SyntheticScenes(24, 32, num_classes=8)
    labels = torch.stack([scenes[i][1] for i in range(len(scenes))])
    assert labels.unique().tolist() == list(range(8))
    assert 0.3 < (labels == 0).float().mean() < 0.95  # background and objects both present


def test_synthetic_image_is_imagenet_normalised():
    image, _ = SyntheticScenes(1, 32)[0]
    raw = image * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


@pytest.mark.parametrize(
    "spec, message", [("ade20k", "has no path"), ("kitti:/data", "unknown data spec"), ("synthetic:/x", "unknown")]
)
def test_bad_data_specs(spec, message):
    with pytest.raises(EdgesegError, match=message):
        DataSpec.parse(spec)


def test_build_dataset_refuses_unknown_split():
    with pytest.raises(EdgesegError, match="unknown split"):
        build_dataset("synthetic", "test", SIZE)


def test_inner_outer_split_is_deterministic_disjoint_and_complete():
    data = SyntheticScenes(50, 8)
    inner, outer = inner_outer_split(data, outer_fraction=0.2, seed=1)
    again_inner, _ = inner_outer_split(data, outer_fraction=0.2, seed=1)
    assert len(outer) == 10 and len(inner) == 40
    assert inner.indices == again_inner.indices
    assert sorted(inner.indices + outer.indices) == list(range(50))
    assert inner_outer_split(data, 0.2, seed=2)[1].indices != outer.indices
    with pytest.raises(EdgesegError):
        inner_outer_split(data, outer_fraction=1.0)


# ---- synthetic-hard ----

@pytest.fixture(scope="module")
def hard_labels():
    """300 scenes of 64 px: enough for the rarest class (a few hundred instances in 2000 scenes)."""
    scenes = build_dataset("synthetic-hard", "train", 64, length=300, seed=0)
    return scenes, np.stack([scenes.render(i)[1] for i in range(len(scenes))])


def test_hard_synthetic_scenes_are_deterministic_sized_and_registered():
    scenes = build_dataset("synthetic-hard", "train", 48, length=4, seed=3, num_classes=8)
    assert isinstance(scenes, HardSyntheticScenes) and scenes.num_classes == 40  # its own classes
    image, label = scenes[2]
    again = HardSyntheticScenes(4, 48, seed=3)[2]
    assert torch.equal(image, again[0]) and torch.equal(label, again[1])
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and label.shape == (48, 48)
    assert label.dtype == torch.int64
    assert not torch.equal(image, scenes[1][0])
    assert not torch.equal(image, HardSyntheticScenes(4, 48, seed=4)[2][0])
    assert not torch.equal(image, HardSyntheticScenes(4, 48, seed=3, split="val")[2][0])
    assert DataSpec.parse("synthetic-hard").kind == "synthetic-hard"
    with pytest.raises(EdgesegError, match="unknown data spec"):
        DataSpec.parse("synthetic-hard:/x")


def test_hard_synthetic_labels_are_valid_and_cover_every_class_with_a_long_tail(hard_labels):
    _, labels = hard_labels
    assert labels.min() >= 0 and labels.max() < 40 and not (labels == 255).any()  # every pixel a class
    pixels = np.bincount(labels.ravel(), minlength=40)
    assert (pixels > 0).all()  # all 40 classes occur
    objects = pixels[8:]  # regions cover most of the image; objects follow a long tail
    assert 0.5 < pixels[:8].sum() / pixels.sum() < 0.95
    assert objects.max() > 20 * objects.min()


def test_hard_synthetic_context_pairs_follow_the_region_and_thin_structures_are_thin(hard_labels):
    scenes, labels = hard_labels
    regions = np.stack([scenes.regions(i) for i in range(len(scenes))])
    assert (labels[labels < 8] == regions[labels < 8]).all()  # regions are drawn first, objects over them
    wet = np.isin(regions, sorted(WET))
    for first in range(8, 20, 2):  # (wet class, dry class): same look, told apart by the surroundings
        assert wet[labels == first].mean() > 0.7 and wet[labels == first + 1].mean() < 0.3
    for cls in range(32, 36):  # 1-3 px wide: a 3x3 erosion removes almost all of it
        mask = labels == cls
        core = mask[:, 1:-1, 1:-1].copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                core &= mask[:, 1 + dy:mask.shape[1] - 1 + dy, 1 + dx:mask.shape[2] - 1 + dx]
        assert core.sum() < 0.2 * mask.sum(), cls


def test_hard_synthetic_texture_pairs_differ_in_texture_alone():
    by_class = {look.classes[0]: look for look in looks()}
    assert sorted(c for look in looks() for c in look.classes) == list(range(8, 40))
    for first in range(20, 32, 2):
        a, b = by_class[first], by_class[first + 1]
        assert (a.shape, a.hue, a.saturation, a.scale) == (b.shape, b.hue, b.saturation, b.scale)
        assert a.texture is not b.texture
