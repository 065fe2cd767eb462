"""CIFAR-10 from the official python layout: `<root>/cifar-10-batches-py/data_batch_{1..5}`, `test_batch` and
`batches.meta`.

The batches are pickles, and a dataset root is untrusted: they are read by an unpickler that builds only what
those files hold (dicts, lists, str/bytes, ints and uint8 numpy arrays) and refuses every other global, so a
hostile batch file cannot run code.
"""

import io
import pickle
from pathlib import Path

import numpy as np
from jaxtyping import Int, UInt8

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"


def _allowed_globals() -> dict[tuple[str, str], object]:
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # how numpy 1 (and the official files) name it
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles written by Python 3 encode bytes with it
    }


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR batch needs."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR-10 batch holds only dicts, lists and "
                                         "numpy arrays")
        return allowed[(module, name)]


def read_pickle(path: Path) -> dict:
    """A CIFAR-10 batch or meta file as a dict with str keys (the official files are Python 2 pickles)."""
    try:
        obj = _BatchUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{path} is not a CIFAR-10 batch file: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch file: holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[UInt8[np.ndarray, "N 32 32 3"], Int[np.ndarray, " N"]]:
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (labels < 0).any() or (labels > 9).any():
        raise ValueError(f"{path}: 'labels' must be {len(data)} class indices in 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def check_root(root: str, test: bool = False) -> str | None:
    """None when `root` holds the training batches (and `test_batch` if `test`), else a message saying what is
    missing."""
    if not root:
        return f"is empty; name the directory that contains {FOLDER}/"
    folder = Path(root).expanduser() / FOLDER
    needed = (*TRAIN_FILES, META_FILE, *((TEST_FILE,) if test else ()))
    if not folder.is_dir():
        return f"{root!r} has no {FOLDER}/ (expected {FOLDER}/{{{', '.join(needed)}}})"
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        return f"{folder} lacks {', '.join(missing)}"
    return None


def _class_names(folder: Path) -> tuple[str, ...]:
    names = read_pickle(folder / META_FILE).get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, str | bytes) for n in names):
        raise ValueError(f"{folder / META_FILE}: 'label_names' must be a list of names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def load_train(root: str) -> tuple[UInt8[np.ndarray, "N 32 32 3"], Int[np.ndarray, " N"], tuple[str, ...]]:
    """All 50,000 training images (in batch order), their labels and the class names."""
    problem = check_root(root)
    if problem:
        raise FileNotFoundError(f"CIFAR-10 root {problem}")
    folder = Path(root).expanduser() / FOLDER
    images, labels = zip(*(_read_batch(folder / name) for name in TRAIN_FILES))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), _class_names(folder)


def load_test(root: str) -> tuple[UInt8[np.ndarray, "N 32 32 3"], Int[np.ndarray, " N"], tuple[str, ...]]:
    """The 10,000 images of the official `test_batch`, their labels and the class names."""
    problem = check_root(root, test=True)
    if problem:
        raise FileNotFoundError(f"CIFAR-10 root {problem}")
    folder = Path(root).expanduser() / FOLDER
    images, labels = _read_batch(folder / TEST_FILE)
    return np.ascontiguousarray(images), labels, _class_names(folder)
