"""CUB-200-2011 in its official layout: 200 bird classes, 312 binary traits, the official train/test split.

`root` is the directory holding `CUB_200_2011/` (the official archive's top level; `attributes.txt` may sit
beside it or in `CUB_200_2011/attributes/`). `train` is the official training split and `val` the official test
split, both in image-id order. A trait is present for an image when a line of
`attributes/image_attribute_labels.txt` (`image_id attribute_id is_present certainty_id [worker] time`) has
`is_present == 1` and `certainty_id` 3 (probably) or 4 (definitely). Images are read with PIL and resized to
`IMAGE_SIZE` x `IMAGE_SIZE`; `load_annotations` gives labels and traits without reading any image.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Bool, Int, UInt8

from nfjobs.config import DataConfig

FOLDER = "CUB_200_2011"
IMAGE_SIZE = 224
"""Side of the square every image is resized to."""
N_TRAITS = 312
CONFIDENT = (3, 4)
"""Certainty ids (probably, definitely) under which a worker's `is_present == 1` counts as present."""
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
         "attributes/image_attribute_labels.txt")


@dataclass(frozen=True)
class Annotations:
    """One split's annotations, in image-id order."""

    image_ids: Int[np.ndarray, " N"]
    paths: tuple[str, ...]
    """Image paths relative to `CUB_200_2011/images/`."""
    labels: Int[np.ndarray, " N"]
    """Class index, 0-based."""
    traits: Bool[np.ndarray, "N 312"]
    class_names: tuple[str, ...]
    trait_names: tuple[str, ...]


def _folder(root: str) -> Path:
    path = Path(root).expanduser()
    return path if path.name == FOLDER and not (path / FOLDER).is_dir() else path / FOLDER


def _attribute_names_file(folder: Path) -> Path | None:
    for candidate in (folder.parent / "attributes.txt", folder / "attributes" / "attributes.txt"):
        if candidate.is_file():
            return candidate
    return None


def check_root(root: str, images: bool = True) -> str | None:
    """None when `root` holds the official layout (with `images/` if `images`), else what is missing."""
    if not root:
        return f"is empty; name the directory that contains {FOLDER}/"
    folder = _folder(root)
    if not folder.is_dir():
        return f"{root!r} has no {FOLDER}/ (expected {FOLDER}/{{{', '.join(FILES)}, images/}})"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if _attribute_names_file(folder) is None:
        missing.append(f"attributes.txt (beside {FOLDER}/ or in {FOLDER}/attributes/)")
    if images and not (folder / "images").is_dir():
        missing.append("images/")
    return f"{folder} lacks {', '.join(missing)}" if missing else None


def _table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_traits(path: Path, n_images: int) -> Bool[np.ndarray, "N 312"]:
    """Per-image traits (indexed by image id - 1) from `image_attribute_labels.txt`; the optional worker field
    before the time is ignored (only the first four fields are read)."""
    import polars as pl

    cols = ("image_id", "attribute_id", "is_present", "certainty_id")
    lines = pl.DataFrame({"line": path.read_text().splitlines()}).filter(pl.col("line").str.strip_chars() != "")
    fields = pl.col("line").str.strip_chars().str.split(" ").list.slice(0, 4).list.to_struct(fields=cols)
    df = lines.select(fields).unnest("line").select(pl.col(c).cast(pl.Int32) for c in cols)
    present = df.filter((pl.col("is_present") == 1) & pl.col("certainty_id").is_in(CONFIDENT))
    traits = np.zeros((n_images, N_TRAITS), bool)
    traits[present["image_id"].to_numpy() - 1, present["attribute_id"].to_numpy() - 1] = True
    return traits


def load_annotations(root: str, split: Literal["train", "val"]) -> Annotations:
    """Labels, traits and image paths of the official training (`train`) or test (`val`) split."""
    problem = check_root(root, images=False)
    if problem:
        raise FileNotFoundError(f"CUB-200-2011 root {problem}")
    folder = _folder(root)
    images = {int(i): p for i, p in _table(folder / "images.txt")}
    classes = {int(i): int(c) for i, c in _table(folder / "image_class_labels.txt")}
    is_train = {int(i): s == "1" for i, s in _table(folder / "train_test_split.txt")}
    ids = np.array(sorted(i for i in images if is_train[i] == (split == "train")), np.int64)
    traits = read_traits(folder / "attributes" / "image_attribute_labels.txt", max(images))[ids - 1]
    class_names = tuple(name.split(".", 1)[-1] for _, name in sorted(_table(folder / "classes.txt"),
                                                                   key=lambda row: int(row[0])))
    trait_names = tuple(name for _, name in _table(_attribute_names_file(folder)))
    return Annotations(ids, tuple(images[i] for i in ids), np.array([classes[i] - 1 for i in ids], np.int64),
                       traits, class_names, trait_names)


def read_images(root: str, paths: tuple[str, ...], size: int = IMAGE_SIZE) -> UInt8[np.ndarray, "N S S 3"]:
    """The images at `paths` (relative to `images/`) as RGB, resized to `size` x `size` (`imagefolder.decode`:
    an image leading out of `images/`, claiming too many pixels or corrupt raises ImageError naming it)."""
    from nfjobs.data.imagefolder import decode

    out = np.empty((len(paths), size, size, 3), np.uint8)
    images = _folder(root) / "images"
    real = images.resolve()
    for i, p in enumerate(paths):  # read only inside images/, within the pixel limit, errors naming the file
        out[i] = decode(images, p, size, real)
    return out


def load_split(cfg: DataConfig, split: Literal["train", "val"], size: int = IMAGE_SIZE):
    """The official training (`train`, first `cfg.n_train` if set) or test (`val`) split with images."""
    from nfjobs.data import Split

    problem = check_root(cfg.root)
    if problem:
        raise FileNotFoundError(f"CUB-200-2011 root {problem}")
    ann = load_annotations(cfg.root, split)
    keep = slice(None) if split == "val" or cfg.n_train == 0 else slice(0, cfg.n_train)
    return Split(read_images(cfg.root, ann.paths[keep], size), ann.labels[keep], ann.traits[keep],
                 ann.class_names, ann.trait_names)
