"""Atomic writes, and reading checkpoints without unpickling code."""

import os
from pathlib import Path
from typing import Any, Callable


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a torn one."""
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_with(path: Path, write: Callable[[Any], Any]) -> None:
    """`write(binary file)` into a temporary file beside `path`, then rename it to `path` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class UnsafeCheckpoint(ValueError):
    """A checkpoint that holds more than tensors and plain containers (loading it would run arbitrary code)."""


def load_tensors(path: Path | str, map_location: Any = "cpu") -> Any:
    """A `torch.save` file holding only tensors and plain containers (dicts, lists, numbers, strings), read with
    `weights_only=True`: a file that needs arbitrary unpickling is refused, never executed."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UnsafeCheckpoint(f"{path}: not a plain checkpoint (tensors, dicts, lists, numbers and strings only); "
                               f"it needs arbitrary unpickling, which is refused: {first}") from None
