"""Frozen probes trained from a cache in memory vs streamed under a budget several times smaller, side by side.

    uv run python bench/probe_stream_bench.py                                          # CPU, tiny
    python bench/probe_stream_bench.py --train-images 50000 --maps 16 --channels 64    # a GPU, ~1.6 GB float16

Writes a learnable synthetic TDSM cache (class in class order, as an image-folder cache is stored: maps of
`channels` channels whose mean is shifted by the class, plus noise) with `CacheWriter`, then runs the `probe` job
(`transformer` and `tdsm_gap`) with `max_resident_gb` above the training split (loaded, moved to the device)
and at 1/`--fraction` of it (streamed with `ActivationCache.shuffled_batches`), alternating, `--repeats` times
each after one warm-up run; the median by train_s is shown. Reads come from the page cache (the files were just
written). Also reads the training split alone once in order (`stream`) and once
shuffled (`shuffled_batches`) at the small budget: what the pieces cost against sequential reads.
Columns: `images_per_s` = epochs x training images / train_s; `GB_per_s` = cache bytes read / job seconds
(train and val; the in-memory run reads each once, the streamed one train once per epoch).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root (nfjobs is not installed)


def write_cache(root: Path, args) -> int:
    """Two splits of a learnable maps cache; returns the training split's bytes."""
    import numpy as np

    from nfjobs.activations import CacheWriter

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.channels)).astype(np.float32) * 0.5
    for split, n in (("train", args.train_images), ("val", args.val_images)):
        labels = np.sort(rng.integers(0, args.classes, n))
        meta = {"source": "tdsm", "context": "full", "label": "bench-tdsm", "context_frac": 1.0,
                "dataset": {"name": "bench"}, "split": split, "image_shape": [args.maps, args.maps, 3],
                "class_names": [str(c) for c in range(args.classes)], "config": {"tdsm": {"reduce": "mean"}}}
        w = CacheWriter(root / split, meta, n, args.maps * args.maps, args.channels, args.shard_size, "float16")
        w.write_labels(labels)
        for i in range(w.n_shards):
            r = w.shard_range(i)
            noise = rng.standard_normal((len(r), args.maps ** 2, args.channels), np.float32)
            w.write_shard(i, (centres[labels[r.start : r.stop], None, :] + noise).astype(np.float16))
        w.finish()
    return args.train_images * args.maps ** 2 * args.channels * 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-images", type=int, default=1024)
    p.add_argument("--val-images", type=int, default=256)
    p.add_argument("--maps", type=int, default=8, help="maps are maps x maps tokens")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--fraction", type=float, default=8.0, help="streamed budget = training split / this")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--probes", default="transformer,tdsm_gap")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--repeats", type=int, default=3, help="runs per mode (alternated); the median is shown")
    p.add_argument("--tmp", default=None)
    p.add_argument("--json", default="")
    args = p.parse_args()

    import numpy as np
    import torch

    from nfjobs.activations import StreamStats, open_cache
    from nfjobs.context import Context
    from nfjobs.jobs import probe

    root = Path(tempfile.mkdtemp(dir=args.tmp)) / "cache"
    train_bytes = write_cache(root, args)
    small = train_bytes / args.fraction
    rows = []
    for mode in ("in order (stream)", "shuffled pieces (shuffled_batches)"):
        stats = StreamStats()
        cache = open_cache(root / "train")
        start = time.perf_counter()
        items = (cache.stream(int(small), stats=stats) if mode.startswith("in order")
                 else cache.shuffled_batches(int(small), args.batch_size, np.random.default_rng(0), stats))
        for _ in items:
            pass
        seconds = time.perf_counter() - start
        rows.append({"run": f"read only, {mode}", "budget_MB": small / 1e6, "seconds": seconds,
                     "images_per_s": args.train_images / seconds, "GB_per_s": stats.bytes_read / 1e9 / seconds,
                     "peak_resident_MB": stats.peak_resident_bytes / 1e6})
    def probe_run(kind, budget, key, epochs):
        cfg = probe.Config(activations=str(root), probe=kind, epochs=epochs, batch_size=args.batch_size,
                           d_model=args.d_model, lr=args.lr, max_resident_gb=budget / 1e9)
        start = time.perf_counter()
        (row,) = probe.run(cfg, Context(key=key, kind="probe", runs_root=root.parent / "runs"))
        return row, time.perf_counter() - start

    for kind in args.probes.split(","):
        probe_run(kind, 2 * train_bytes, f"{kind}-warm-up", 1)  # first-call costs (imports, allocator) paid here
        runs = {"in memory": [], "streamed": []}
        for rep in range(args.repeats):  # alternated, so a busy machine slows both alike
            for mode, budget in (("in memory", 2 * train_bytes), ("streamed", small)):
                row, seconds = probe_run(kind, budget, f"{kind}-{mode}-{rep}", args.epochs)
                assert row["streamed"] == (mode == "streamed")
                runs[mode].append((row["train_s"], seconds, row))
        for mode, budget in (("in memory", 2 * train_bytes), ("streamed", small)):
            train_s, seconds, row = sorted(runs[mode], key=lambda r: r[0])[len(runs[mode]) // 2]  # median
            rows.append({"run": f"{kind}, {mode}", "budget_MB": budget / 1e6, "seconds": seconds,
                         "train_s": train_s, "images_per_s": args.epochs * args.train_images / train_s,
                         "GB_per_s": row["cache_gb_read"] / seconds, "peak_resident_MB": row["peak_resident_bytes"] / 1e6,
                         "accuracy": row["accuracy"]})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{device}, torch {torch.__version__}; train {args.train_images:,} x {args.maps}x{args.maps} maps x "
          f"{args.channels} channels float16 ({train_bytes / 1e6:,.1f} MB), val {args.val_images:,}; "
          f"{args.epochs} epochs, batch {args.batch_size}, d_model {args.d_model}; median of {args.repeats}; streamed budget = train / {args.fraction:g}")
    cols = ["budget_MB", "seconds", "train_s", "images_per_s", "GB_per_s", "peak_resident_MB", "accuracy"]
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{r[c]:,.3g}" if c in r else "" for c in cols) + " |")
    by = {r["run"]: r for r in rows}
    for kind in args.probes.split(","):
        ratio = by[f"{kind}, streamed"]["images_per_s"] / by[f"{kind}, in memory"]["images_per_s"]
        print(f"{kind}: streamed / in-memory images per second: {ratio:.2f}x")


if __name__ == "__main__":
    main()
