"""Immutable activation caches: shards of per-image token activations, written once, memory-mapped to read.

A cache directory holds

    meta.json                 what produced it (source, checkpoint hash, dataset, split, layer, dtype, shapes,
                              counts) and whether it is complete
    labels.npy                int64 (N,)
    traits.npy                bool (N, T), when the dataset has traits
    shards/acts_00000.npy     (images_in_shard, n_tokens, d), every shard `shard_size` images but the last

Shards are written atomically (temporary file + rename), so a crashed or requeued writer finds only whole
shards and resumes at the first missing one. Numpy only: readers need no torch.

A cache can be written by several tasks at once (`cache` cells with `parts > 1`), each owning a disjoint range of
shards (`part_shards`); `finish_cache` marks it complete once every shard is there. Consumers that must not hold a
whole cache in memory read it with `ActivationCache.stream`: chunks in image order, read with plain file reads
(no memory map), at most `max_resident_bytes` of them alive at once (one being used, one being read ahead
once the one before is gone).
Training that wants shuffled batches reads `ActivationCache.shuffled_batches` under the same budget.
"""

import ctypes
import json
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from jaxtyping import Bool, Float, Int

from nfjobs.store.files import atomic_write_bytes, atomic_write_with
from nfjobs.store.layout import META
LABELS = "labels.npy"
TRAITS = "traits.npy"
SHARDS = "shards"
DTYPES = ("float16", "float32")
PIECES_PER_CHUNK = 16
"""`shuffled_batches` mixes at least this many places of the cache in a chunk (when a chunk holds as many images)."""


class CacheError(RuntimeError):
    """A cache directory is missing, incomplete, or was written by something else."""


def shard_path(root: Path, i: int) -> Path:
    return Path(root) / SHARDS / f"acts_{i:05d}.npy"


def part_shards(n_shards: int, part: int, parts: int) -> range:
    """The shards task `part` of `parts` writes: contiguous, disjoint, together all of them."""
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")
    return range(part * n_shards // parts, (part + 1) * n_shards // parts)


def _write_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` straight into the atomic temporary file (no in-memory copy of a multi-GB shard)."""
    atomic_write_with(path, lambda f: np.save(f, array, allow_pickle=False))


@dataclass
class CacheWriter:
    """Writes one cache directory shard by shard; reopening it with the same `meta` resumes it.

    `meta` says what produced the activations; a directory holding a cache with different `meta` is refused
    rather than mixed. Shapes and counts are added to it here.
    """

    root: Path
    meta: dict[str, Any]
    n_images: int
    n_tokens: int
    d: int
    shard_size: int
    dtype: Literal["float16", "float32"] = "float32"
    _full_meta: dict[str, Any] = field(init=False)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        self.root = Path(self.root)
        self._full_meta = {
            **self.meta, "n_images": self.n_images, "n_tokens": self.n_tokens, "d": self.d,
            "shard_size": self.shard_size, "n_shards": self.n_shards, "dtype": self.dtype,
        }
        existing = self.root / META
        if existing.exists():
            old = json.loads(existing.read_text())
            old.pop("complete", None)
            if old != self._full_meta:
                changed = sorted(k for k in old.keys() | self._full_meta.keys() if old.get(k) != self._full_meta.get(k))
                raise CacheError(
                    f"{self.root} holds a cache made by something else (differs in {', '.join(changed)}); "
                    "delete the directory to rebuild it"
                )
        else:
            self._write_meta(complete=False)

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    def shard_range(self, i: int) -> range:
        """Image indices of shard `i`."""
        return range(i * self.shard_size, min((i + 1) * self.shard_size, self.n_images))

    def missing_shards(self) -> list[int]:
        """Shards not yet on disk, in order; the writer resumes at the first."""
        return [i for i in range(self.n_shards) if not shard_path(self.root, i).exists()]

    def write_labels(self, labels: Int[np.ndarray, " N"], traits: Bool[np.ndarray, "N T"] | None = None) -> None:
        if len(labels) != self.n_images or (traits is not None and len(traits) != self.n_images):
            raise ValueError(f"labels/traits must have {self.n_images} rows")
        _write_npy(self.root / LABELS, np.asarray(labels, np.int64))
        if traits is not None:
            _write_npy(self.root / TRAITS, np.asarray(traits, bool))

    def write_shard(self, i: int, acts: Float[np.ndarray, "n T D"]) -> None:
        expected = (len(self.shard_range(i)), self.n_tokens, self.d)
        if acts.shape != expected:
            raise ValueError(f"shard {i} must have shape {expected}, got {acts.shape}")
        _write_npy(shard_path(self.root, i), np.asarray(acts, self.dtype))  # no copy if already that dtype

    def finish(self) -> None:
        """Mark the cache complete once every shard and the labels are written."""
        missing = self.missing_shards()
        if missing or not (self.root / LABELS).exists():
            raise CacheError(f"{self.root}: cannot finish, shards {missing[:5]} or labels missing")
        self._write_meta(complete=True)

    def _write_meta(self, complete: bool) -> None:
        text = json.dumps({**self._full_meta, "complete": complete}, indent=2, sort_keys=True)
        atomic_write_bytes(self.root / META, text.encode())


@dataclass(frozen=True)
class ActivationCache:
    """A complete cache opened for reading; shards are memory-mapped, nothing is loaded until asked."""

    root: Path
    meta: dict[str, Any]
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"] | None
    shards: tuple[np.ndarray, ...]
    """Memory-mapped (images_in_shard, n_tokens, d) arrays."""

    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def d(self) -> int:
        return int(self.meta["d"])

    def batches(self) -> Iterator[tuple[Float[np.ndarray, "n T D"], Int[np.ndarray, " n"]]]:
        """(activations, labels) per shard, in image order."""
        start = 0
        for shard in self.shards:
            yield shard, self.labels[start : start + len(shard)]
            start += len(shard)

    def load_all(self, pool: Literal["mean"] | None = None,
                 max_resident_bytes: int = 256 << 20) -> Float[np.ndarray, "N ..."]:
        """Every image's activations in memory: (N, n_tokens, d), or (N, d) mean-pooled over tokens (streamed:
        only the pooled result and `max_resident_bytes` of shards are held)."""
        if pool is None:
            return np.concatenate(self.shards)
        if pool == "mean":
            return np.concatenate([a.mean(axis=1, dtype=np.float32) for _, a in self.stream(max_resident_bytes)])
        raise ValueError(f"pool must be None or 'mean', got {pool!r}")

    @property
    def bytes_per_image(self) -> int:
        return self.n_tokens * self.d * np.dtype(self.meta["dtype"]).itemsize

    def _per_chunk(self, max_resident_bytes: int, images_per_chunk: int = 0) -> int:
        """Images per chunk: half of `max_resident_bytes`, or `images_per_chunk` if that fits in it."""
        per_chunk = max_resident_bytes // 2 // self.bytes_per_image
        if images_per_chunk:
            if images_per_chunk > per_chunk:
                raise ValueError(f"{images_per_chunk} images per chunk ({images_per_chunk * self.bytes_per_image:,} "
                                 f"bytes) need max_resident_bytes >= {2 * images_per_chunk * self.bytes_per_image:,}")
            per_chunk = images_per_chunk
        if per_chunk < 1:
            raise ValueError(f"max_resident_bytes = {max_resident_bytes:,} holds less than two images of "
                             f"{self.bytes_per_image:,} bytes")
        return per_chunk

    def stream(self, max_resident_bytes: int, images_per_chunk: int = 0,
               stats: "StreamStats | None" = None) -> Iterator[tuple[int, Float[np.ndarray, "n T D"]]]:
        """(first image index, activations) chunks in image order; a chunk never spans two shards.

        At most two chunks are alive at once (the one yielded, the next being read by a thread), each at most
        half of `max_resident_bytes`: the next-but-one is read only once the consumer has dropped every
        reference to an earlier chunk (holding one longer costs read-ahead, not memory; only a consumer that
        keeps two chunks while asking for a third exceeds the budget, and `stats` shows it). A chunk's memory is
        reused once it is dropped: keep a copy of what must outlive it. `images_per_chunk`
        fixes the chunk size (for results that must not depend on the budget); 0 = as large as the budget
        allows. `stats` records what was read and what is alive.
        """
        starts = np.cumsum([0, *map(len, self.shards)])
        plan = [(int(starts[i]) + lo, [(i, lo, hi)]) for i, lo, hi in self.chunks(max_resident_bytes, images_per_chunk)]
        yield from self._read_ahead(plan, stats)

    def chunks(self, max_resident_bytes: int, images_per_chunk: int = 0) -> list[tuple[int, int, int]]:
        """(shard, first image, end image) of each chunk `stream` yields, in order (nothing is read)."""
        per_chunk = self._per_chunk(max_resident_bytes, images_per_chunk)
        return [(i, r, min(r + per_chunk, len(shard))) for i, shard in enumerate(self.shards)
                for r in range(0, len(shard), per_chunk)]

    def shuffled_batches(self, max_resident_bytes: int, batch_size: int, rng: np.random.Generator,
                         stats: "StreamStats | None" = None
                         ) -> Iterator[tuple[Int[np.ndarray, " b"], Float[np.ndarray, "b T D"]]]:
        """(image indices, activations) batches of `batch_size` images (the last one smaller) covering every
        image once, in an order drawn from `rng`, holding what `stream` holds: the shards are cut into pieces of
        at most 1/`PIECES_PER_CHUNK` of a chunk, the pieces shuffled over the whole cache and read a chunk at a
        time, the images of a chunk shuffled (so a cache in class order still gives batches of many classes).
        Batches are copies (at most two more batches of memory): keep them as long as needed."""
        per_chunk = self._per_chunk(max_resident_bytes)
        piece = max(1, per_chunk // PIECES_PER_CHUNK)
        pieces, start = [], 0
        for i, shard in enumerate(self.shards):
            pieces += [(start + r, i, r, min(r + piece, len(shard))) for r in range(0, len(shard), piece)]
            start += len(shard)
        plan, group, size = [], [], 0
        for k in rng.permutation(len(pieces)):
            n = pieces[k][3] - pieces[k][2]
            if size + n > per_chunk:
                plan.append(group)
                group, size = [], 0
            group.append(pieces[k])
            size += n
        plan = [(np.concatenate([np.arange(f, f + hi - lo) for f, _, lo, hi in g]), [p[1:] for p in g])
                for g in [*plan, group] if g]
        carry_idx = np.empty(0, np.int64)
        carry = np.empty((0, self.n_tokens, self.d), self.meta["dtype"])
        for idx, chunk in self._read_ahead(plan, stats):
            order = rng.permutation(len(idx))
            fill = order[: batch_size - len(carry_idx)]
            carry_idx, carry = np.concatenate([carry_idx, idx[fill]]), np.concatenate([carry, chunk[fill]])
            if len(carry_idx) < batch_size:  # the chunk went into the carry
                del chunk
                continue
            yield carry_idx, carry
            rest = order[len(fill):]
            full = len(rest) // batch_size * batch_size
            for b in range(0, full, batch_size):
                yield idx[rest[b : b + batch_size]], chunk[rest[b : b + batch_size]]
            carry_idx, carry = idx[rest[full:]], chunk[rest[full:]]
            del chunk  # before the next chunk is asked for: only two are alive
        if len(carry_idx):
            yield carry_idx, carry

    def _read_ahead(self, plan: list[tuple[Any, list[tuple[int, int, int]]]],
                    stats: "StreamStats | None") -> Iterator[tuple[Any, np.ndarray]]:
        """(tag, chunk) for every (tag, pieces) of `plan`, a chunk being the row ranges `pieces` ((shard, lo,
        hi), read one after another into one array), read by a thread ahead of the consumer.

        Chunks are read into two buffers that are reused: a buffer is read into again only once the last
        reference to the chunk in it (the consumer's loop variable, a view or tensor of it) is gone, so a
        consumer that holds a chunk longer delays the read instead of raising the resident set, and nothing is
        allocated while an old chunk is being freed. A consumer that asks for a chunk while keeping both
        buffers gets a third (kept until one of them comes back); `stats` counts the buffers alive."""
        stats = stats if stats is not None else StreamStats()
        t0 = time.perf_counter()
        cap = max((sum(hi - lo for _, lo, hi in pieces) for _, pieces in plan), default=0) * self.bytes_per_image
        dtype = np.dtype(self.meta["dtype"])
        lock, futures, free = threading.RLock(), {}, []
        state = {"next": 0, "in_use": 0, "closed": False}  # next chunk to read; buffers being read or held

        def read(pieces):
            with lock:
                buf = free.pop() if free else None
            if buf is None:
                buf = np.empty(cap, np.uint8)
                stats.hold(cap)
            rows = sum(hi - lo for _, lo, hi in pieces)
            # a view whose base is not an array: every later view of the chunk keeps `flat` (not `buf`) alive
            flat = np.frombuffer((ctypes.c_char * (rows * self.bytes_per_image)).from_buffer(buf), np.uint8)
            weakref.finalize(flat, give_back, buf).atexit = False
            out = flat.view(dtype).reshape(rows, self.n_tokens, self.d)
            by_shard, at = {}, 0
            for i, lo, hi in pieces:  # each shard opened once per chunk, its pieces read in file order
                by_shard.setdefault(i, []).append((lo, hi, out[at : at + hi - lo]))
                at += hi - lo
            for i, ranges in sorted(by_shard.items()):
                read_row_ranges(shard_path(self.root, i), sorted(ranges, key=lambda r: r[0]))
            stats.read(out.nbytes)
            return out

        def start_reads(force: bool = False):
            with lock:
                while not state["closed"] and state["next"] < len(plan) and (state["in_use"] < 2 or force):
                    futures[state["next"]] = pool.submit(read, plan[state["next"]][1])
                    state["next"] += 1
                    state["in_use"] += 1
                    force = False

        def give_back(buf: np.ndarray):
            with lock:
                state["in_use"] -= 1
                if state["closed"] or state["in_use"] + len(free) >= 2:
                    stats.release(cap)  # the buffer is dropped with the chunk
                else:
                    free.append(buf)
            start_reads()

        pool = ThreadPoolExecutor(1)
        try:
            start_reads()
            for k, (tag, _) in enumerate(plan):
                if k not in futures:  # the consumer holds both buffers
                    start_reads(force=True)
                chunk = futures.pop(k).result()
                yield tag, chunk
                del chunk
        finally:
            with lock:
                state["closed"] = True
                stats.release(cap * len(free))
                free.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            futures.clear()
        stats.seconds += time.perf_counter() - t0


@dataclass
class StreamStats:
    """What `ActivationCache.stream` read (bytes, seconds) and the bytes of its buffers alive now and at most at
    once (a buffer lives while the stream runs or a chunk in it is referenced)."""

    bytes_read: int = 0
    seconds: float = 0.0
    resident_bytes: int = 0
    peak_resident_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    def hold(self, n: int) -> None:
        with self._lock:
            self.resident_bytes += n
            self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def release(self, n: int) -> None:
        with self._lock:
            self.resident_bytes -= n

    @property
    def gb_per_s(self) -> float:
        return self.bytes_read / max(self.seconds, 1e-9) / 1e9


def read_row_ranges(path: Path, ranges: list[tuple[int, int, np.ndarray | None]]) -> list[np.ndarray]:
    """Rows [lo, hi) of a C-ordered .npy file for each (lo, hi, out) of `ranges`, the file opened once, each read
    into `out` (C-contiguous, of the file's dtype and row shape) or, where it is None, a fresh array."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        data_start, row_bytes = f.tell(), int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        outs = []
        for lo, hi, out in ranges:
            if fortran or not 0 <= lo <= hi <= shape[0]:
                raise CacheError(f"{path}: cannot read rows [{lo}, {hi}) of a {'Fortran' if fortran else ''} {shape} array")
            if out is None:
                out = np.empty((hi - lo, *shape[1:]), dtype)
            elif out.shape != (hi - lo, *shape[1:]) or out.dtype != dtype or not out.flags.c_contiguous:
                raise CacheError(f"{path}: rows [{lo}, {hi}) of a {dtype} {shape} array do not fit a {out.dtype} "
                                 f"{out.shape} buffer")
            f.seek(data_start + lo * row_bytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CacheError(f"{path}: truncated shard")
            outs.append(out)
    return outs


def finish_cache(root: Path | str) -> dict[str, Any]:
    """Mark the cache in `root` complete once every shard and the labels are there (what several writers of
    disjoint shard ranges do at the end); returns its meta."""
    root = Path(root)
    meta = json.loads((root / META).read_text())
    missing = [i for i in range(meta["n_shards"]) if not shard_path(root, i).exists()]
    if missing or not (root / LABELS).exists():
        raise CacheError(f"{root}: cannot finish, shards {missing[:5]} or labels missing")
    if not meta.get("complete"):
        meta["complete"] = True
        atomic_write_bytes(root / META, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta


def open_cache(root: Path | str) -> ActivationCache:
    """Open the complete cache in `root`; a missing or unfinished cache is a `CacheError`."""
    root = Path(root)
    if not (root / META).exists():
        raise CacheError(f"{root} holds no activation cache ({META} missing); run its cache cell first")
    meta = json.loads((root / META).read_text())
    if not meta.get("complete"):
        raise CacheError(f"{root}: the cache is unfinished (its cache cell crashed or is still running)")
    shards = tuple(np.load(shard_path(root, i), mmap_mode="r") for i in range(meta["n_shards"]))
    traits = np.load(root / TRAITS) if (root / TRAITS).exists() else None
    return ActivationCache(root, meta, np.load(root / LABELS), traits, shards)
