"""CIFAR-10 from the official python layout: `<root>/cifar-10-batches-py/data_batch_{1..5}` + `batches.meta`."""

import pickle
from pathlib import Path

import numpy as np
from jaxtyping import Int, UInt8

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
META_FILE = "batches.meta"


def check_root(root: str) -> str | None:
    """None when `root` holds the training batches, else a message saying what is missing."""
    if not root:
        return f"is empty; name the directory that contains {FOLDER}/"
    folder = Path(root).expanduser() / FOLDER
    if not folder.is_dir():
        return f"{root!r} has no {FOLDER}/ (expected {FOLDER}/{{{', '.join(TRAIN_FILES)}, {META_FILE}}})"
    missing = [f for f in (*TRAIN_FILES, META_FILE) if not (folder / f).is_file()]
    if missing:
        return f"{folder} lacks {', '.join(missing)}"
    return None


def load_train(root: str) -> tuple[UInt8[np.ndarray, "N 32 32 3"], Int[np.ndarray, " N"], tuple[str, ...]]:
    """All 50,000 training images (in batch order), their labels and the class names."""
    problem = check_root(root)
    if problem:
        raise FileNotFoundError(f"CIFAR-10 root {problem}")
    folder = Path(root).expanduser() / FOLDER
    images, labels = [], []
    for name in TRAIN_FILES:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], np.int64))
    with open(folder / META_FILE, "rb") as f:
        class_names = tuple(pickle.load(f, encoding="latin1")["label_names"])
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), class_names
