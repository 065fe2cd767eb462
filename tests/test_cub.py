"""CUB-200-2011 loader on fixtures in the official layout, and the constant-predictor line that catches the
seed's label bug (certainty used as the label)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nfjobs.config import DataConfig
from nfjobs.data import check, cub, load_split
from nfjobs.scoring import protocol

N_IMAGES, N_CLASSES = 24, 3
CERTAINTY_P = (0.05, 0.1, 0.35, 0.5)
"""Workers are mostly confident (3 = probably, 4 = definitely), whether or not a trait is present."""


def write_fixture(root: Path, seed: int = 0, certainty_as_label: bool = False) -> dict[str, np.ndarray]:
    """A small CUB-200-2011 tree in the official format; returns the ground truth the loader must recover.

    `certainty_as_label` writes the seed's bug into the labels: `is_present` is 1 wherever the worker was
    confident, whatever they saw.
    """
    rng = np.random.default_rng(seed)
    folder = root / cub.FOLDER
    (folder / "attributes").mkdir(parents=True)
    classes = np.arange(N_IMAGES) % N_CLASSES + 1
    is_train = rng.random(N_IMAGES) < 0.5
    is_train[:2] = True, False
    paths = [f"{c:03d}.Bird_{c}/Bird_{c}_{i:04d}_{i}.jpg" for i, c in enumerate(classes, 1)]
    (folder / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(paths, 1)))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    (folder / "train_test_split.txt").write_text("".join(f"{i} {int(t)}\n" for i, t in enumerate(is_train, 1)))
    (folder / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in range(1, N_CLASSES + 1)))
    (root / "attributes.txt").write_text("".join(f"{a} has_trait::value_{a}\n" for a in range(1, cub.N_TRAITS + 1)))

    prevalence = rng.uniform(0.0, 0.3, cub.N_TRAITS)
    present = rng.random((N_IMAGES, cub.N_TRAITS)) < prevalence
    certainty = rng.choice(np.arange(1, 5), size=present.shape, p=CERTAINTY_P)
    written = np.isin(certainty, (3, 4)) if certainty_as_label else present
    lines = []
    for i in range(N_IMAGES):
        for a in range(cub.N_TRAITS):
            worker = f" {rng.integers(1, 300)}" if rng.random() < 0.3 else ""  # the optional extra field
            lines.append(f"{i + 1} {a + 1} {int(written[i, a])} {certainty[i, a]}{worker} {rng.uniform(1, 30):.3f}\n")
    (folder / "attributes" / "image_attribute_labels.txt").write_text("".join(lines))

    for i, p in enumerate(paths):
        (folder / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        size = (20 + i, 15 + 2 * i)  # CUB images differ in size
        Image.fromarray(np.full((size[1], size[0], 3), i * 10, np.uint8)).save(folder / "images" / p)
    return {"traits": present & np.isin(certainty, (3, 4)), "is_train": is_train, "labels": classes - 1}


def test_labels_split_and_traits(tmp_path):
    truth = write_fixture(tmp_path)
    for split, mask in (("train", truth["is_train"]), ("val", ~truth["is_train"])):
        ann = cub.load_annotations(str(tmp_path), split)
        np.testing.assert_array_equal(ann.image_ids, np.flatnonzero(mask) + 1)
        np.testing.assert_array_equal(ann.labels, truth["labels"][mask])
        np.testing.assert_array_equal(ann.traits, truth["traits"][mask])
        assert ann.class_names == ("Bird_1", "Bird_2", "Bird_3")
        assert len(ann.trait_names) == 312 and ann.trait_names[0] == "has_trait::value_1"


def test_load_split_reads_and_resizes_images(tmp_path):
    truth = write_fixture(tmp_path)
    cfg = DataConfig(name="cub", root=str(tmp_path))
    val = cub.load_split(cfg, "val", size=8)
    assert val.images.shape == ((~truth["is_train"]).sum(), 8, 8, 3) and val.images.dtype == np.uint8
    first_val = int(np.flatnonzero(~truth["is_train"])[0])
    assert (val.images[0] == first_val * 10).all()
    train = load_split(DataConfig(name="cub", root=str(tmp_path), n_train=3), "train")  # the package's entry point
    assert train.images.shape == (3, cub.IMAGE_SIZE, cub.IMAGE_SIZE, 3)
    np.testing.assert_array_equal(train.traits, truth["traits"][truth["is_train"]][:3])


def test_check_root_says_what_is_missing(tmp_path):
    assert "has no CUB_200_2011/" in cub.check_root(str(tmp_path))
    assert check(DataConfig(name="cub", root=str(tmp_path)))[0][0] == "data.root"
    root = tmp_path / "cub"
    write_fixture(root)
    assert cub.check_root(str(root)) is None
    assert check(DataConfig(name="cub", root=str(root))) == []
    (root / cub.FOLDER / "attributes" / "image_attribute_labels.txt").unlink()
    (root / "attributes.txt").unlink()
    problem = cub.check_root(str(root))
    assert "attributes/image_attribute_labels.txt" in problem and "attributes.txt" in problem


def test_constant_predictor_map_is_mean_prevalence(tmp_path):
    truth = write_fixture(tmp_path)
    train, test = (cub.load_annotations(str(tmp_path), s).traits for s in ("train", "val"))
    expected = truth["traits"][~truth["is_train"]]
    keep = expected.any(0)
    scores = torch.randn(len(train), 3), torch.randn(len(test), 3)
    result = protocol.evaluate(scores[0], torch.from_numpy(train), scores[1], torch.from_numpy(test))
    np.testing.assert_allclose(result.constant_ap, expected.mean(0), rtol=0, atol=1e-12)
    constant = result.summary()["constant_map"]
    assert constant == pytest.approx(expected.mean(0)[keep].mean(), abs=1e-12)
    assert protocol.constant_map_problem(constant) is None


def test_certainty_as_label_bug_is_caught_by_the_constant_predictor(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_fixture(good, seed=1)
    write_fixture(bad, seed=1, certainty_as_label=True)
    constant = {}
    for name, root in (("good", good), ("bad", bad)):
        train, val = (cub.load_annotations(str(root), s) for s in ("train", "val"))
        scores = torch.randn(len(train.traits), 4), torch.randn(len(val.traits), 4)
        result = protocol.evaluate(scores[0], torch.from_numpy(train.traits), scores[1], torch.from_numpy(val.traits))
        constant[name] = result.summary()
    assert constant["good"]["constant_map"] < 0.2 and not constant["good"]["constant_map_implausible"]
    assert constant["bad"]["constant_map"] > 0.75 and constant["bad"]["constant_map_implausible"]
    assert "check how trait labels are loaded" in protocol.constant_map_problem(constant["bad"]["constant_map"])
