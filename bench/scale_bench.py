"""Trait discovery at iNat21-mini scale through the public scoring API: time, bytes/s and TFLOP/s against the
GPU's limits, side by side in one run.

    uv run python bench/scale_bench.py                                   # CPU, tiny
    python bench/scale_bench.py --device cuda --images 100000            # H200: ViT-L width, 8,192 prototypes

Three parts:
1. `score in device memory`: `protocol.image_scores` (max over patches of a random-vector scorer) over
   `images` x `patches` x `dim` synthetic activations, cycling through a pool of `pool_images` activations
   generated on the device (the pool is far larger than the L2 cache, so every batch is read from memory), in
   bf16 and, on `fp32_frac` of the images, in fp32. FLOPs = 2 · images · patches · dim · prototypes; bytes =
   the activations read once (the score matrix adds about 4 bytes per patch x prototype on top).
2. `select + test AP`: `protocol.evaluate` on the resulting (images, prototypes) scores, half train, half test,
   `traits` synthetic binary traits (about 10 % prevalence).
3. `stream from disk`: a cache of `disk_images` images written with `CacheWriter`, read by
   `ActivationCache.stream` under a 1 GiB budget, alone (read GB/s) and inside the `score` job (`score.run`,
   both splits, AP included); with `--drop-caches` (root, a machine of your own) the first read is cold. The
   `sae` job trains one epoch (width = prototypes, fp32) on its training split: patches/s, and TFLOP/s counted as
   6 · patches · dim · width (encoder and decoder, forward and backward).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root (nfjobs is not installed)

PEAK_TFLOPS = {"bf16": 790.0, "fp32": 67.0}  # H200 dense, datasheet-ish leads (see the brief / H200.md)
PEAK_TBPS = 4.8


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def pooled_batches(pool, n_images: int, batch: int):
    """`n_images` images of activations in batches of `batch`, cycling through `pool` (on the device)."""
    done = 0
    while done < n_images:
        start = done % len(pool)
        b = min(batch, n_images - done, len(pool) - start)
        yield pool[start : start + b]
        done += b


def score_in_memory(args, device, dtype_name: str, n_images: int, pool, scorer):
    import torch

    from nfjobs.scoring import protocol

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    # warm-up on one batch (kernel selection, allocator)
    protocol.image_scores(scorer, pooled_batches(pool, args.batch, args.batch), device, dtype)
    sync(device)
    start = time.perf_counter()
    scores = protocol.image_scores(scorer, pooled_batches(pool, n_images, args.batch), device, dtype)
    sync(device)
    seconds = time.perf_counter() - start
    flop = 2.0 * n_images * args.patches * args.dim * args.prototypes
    nbytes = n_images * args.patches * args.dim * pool.element_size()
    floor = max(flop / (PEAK_TFLOPS[dtype_name] * 1e12), nbytes / (PEAK_TBPS * 1e12))
    row = {"part": f"score in device memory ({dtype_name})", "images": n_images, "seconds": seconds,
           "patches_per_s": n_images * args.patches / seconds, "GB_per_s": nbytes / seconds / 1e9,
           "TFLOP_per_s": flop / seconds / 1e12, "pct_peak_flops": 100 * flop / seconds / 1e12 / PEAK_TFLOPS[dtype_name],
           "pct_peak_bw": 100 * nbytes / seconds / 1e12 / PEAK_TBPS, "floor_s": floor}
    return row, scores


def disk_part(args, device):
    """Write a two-split cache with traits, read it alone and through the score job."""
    import numpy as np
    import torch

    from nfjobs.activations import CacheWriter, StreamStats, open_cache
    from nfjobs.context import Context
    from nfjobs.jobs import sae, score

    root = Path(tempfile.mkdtemp(dir=args.tmp)) / "cache"
    g = torch.Generator(device=device).manual_seed(1)
    half = args.disk_images // 2
    for split in ("train", "val"):
        w = CacheWriter(root / split, {"source": "bench", "split": split}, half, args.patches, args.dim,
                        args.shard_size, "float16")
        w.write_labels(np.zeros(half, np.int64), np.random.default_rng(2).random((half, args.traits)) < 0.1)
        for i in range(w.n_shards):
            n = len(w.shard_range(i))
            w.write_shard(i, torch.randn(n, args.patches, args.dim, generator=g, device=device,
                                         dtype=torch.float16).cpu().numpy())
        w.finish()
    cold = "warm (page cache)"
    if args.drop_caches:  # a machine of your own only: it empties every process's page cache
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            cold = "cold (page cache dropped)"
        except OSError:
            pass
    stats = StreamStats()
    for _ in open_cache(root / "train").stream(1 << 30, stats=stats):
        pass
    rows = [{"part": f"stream from disk, {cold}", "images": half, "seconds": stats.seconds,
             "GB_per_s": stats.gb_per_s, "peak_resident_MB": stats.peak_resident_bytes / 1e6}]
    cfg = score.Config(activations=str(root), scorer="random", n_prototypes=args.prototypes, device=str(device),
                       max_resident_bytes=1 << 30, train_patches=1000)
    start = time.perf_counter()
    out = score.run(cfg, Context(key="bench", kind="score", runs_root=root.parent / "runs"))[-1]
    seconds = time.perf_counter() - start
    flop = 2.0 * args.disk_images * args.patches * args.dim * args.prototypes
    start = time.perf_counter()
    epoch = sae.run(sae.Config(activations=str(root), width=args.prototypes, epochs=1, batch=4096, shuffle_images=64,
                               device=str(device), max_resident_bytes=1 << 30),
                    Context(key="bench-sae", kind="sae", runs_root=root.parent / "runs"))[-1]
    rows.append({"part": f"sae job, 1 epoch, width {args.prototypes:,} (fp32)", "images": half,
                 "seconds": time.perf_counter() - start, "patches_per_s": epoch["patches_per_s"],
                 "GB_per_s": epoch["gb_read"] / epoch["epoch_s"],
                 "TFLOP_per_s": 6 * 2.0 * epoch["patches"] * args.dim * args.prototypes / epoch["epoch_s"] / 1e12,
                 "peak_resident_MB": epoch["peak_resident_bytes"] / 1e6})
    rows.append({"part": "score job from disk (stream + score + AP)", "images": args.disk_images, "seconds": seconds,
                 "patches_per_s": out["patches_per_s"], "GB_per_s": out["cache_gb_read"] / out["seconds_score"],
                 "TFLOP_per_s": flop / out["seconds_score"] / 1e12, "peak_resident_MB": out["peak_resident_bytes"] / 1e6,
                 "score_s": out["seconds_score"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--patches", type=int, default=16)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--prototypes", type=int, default=256)
    p.add_argument("--traits", type=int, default=312)
    p.add_argument("--batch", type=int, default=64, help="images per image_scores batch")
    p.add_argument("--sweep-batches", type=lambda t: [int(x) for x in t.split(",") if x], default=[],
                   help="other batch sizes to time first, e.g. 32,128,256")
    p.add_argument("--pool-images", type=int, default=256)
    p.add_argument("--fp32-frac", type=float, default=0.1)
    p.add_argument("--disk-images", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--tmp", default=None)
    p.add_argument("--drop-caches", action="store_true", help="drop the page cache before the disk reads (root)")
    p.add_argument("--json", default="")
    args = p.parse_args()

    import torch

    from nfjobs.scoring import protocol, scorers

    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(min(args.pool_images, args.images), args.patches, args.dim, generator=g, device=device,
                       dtype=torch.bfloat16)
    scorer = scorers.make("random", args.prototypes, seed=0)
    scorer.train(torch.zeros(1, args.dim, device=device))
    rows = []
    for batch in args.sweep_batches:
        rows.append(score_in_memory(argparse.Namespace(**{**vars(args), "batch": batch}), device, "bf16",
                                    args.images, pool, scorer)[0])
        rows[-1]["part"] += f", {batch} images per batch"
    row, scores = score_in_memory(args, device, "bf16", args.images, pool, scorer)
    rows.append(row)
    fp32_images = max(args.batch, int(args.images * args.fp32_frac))
    rows.append(score_in_memory(args, device, "fp32", fp32_images, pool, scorer)[0])
    del pool
    half = args.images // 2
    traits = torch.rand(args.images, args.traits, generator=g, device=device) < 0.1
    sync(device)
    start = time.perf_counter()
    ev = protocol.evaluate(scores[:half], traits[:half], scores[half:], traits[half:])
    sync(device)
    rows.append({"part": f"select + test AP ({args.traits} traits)", "images": args.images,
                 "seconds": time.perf_counter() - start, "select_s": ev.seconds_select,
                 "M_APs_per_s": args.prototypes * args.traits / ev.seconds_select / 1e6})
    del scores, traits
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(json.dumps(rows, default=str), flush=True)  # what ran so far, should the disk part fail
    rows += disk_part(args, device)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\n{name}, torch {torch.__version__}; {args.images:,} images x {args.patches} patches x {args.dim} dims "
          f"vs {args.prototypes:,} prototypes; peaks used: {PEAK_TFLOPS} TFLOP/s, {PEAK_TBPS} TB/s")
    cols = ["images", "seconds", "patches_per_s", "GB_per_s", "TFLOP_per_s", "pct_peak_flops", "pct_peak_bw",
            "floor_s", "peak_resident_MB", "select_s", "M_APs_per_s"]
    print("| part | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for r in rows:
        cells = [r.get(c) for c in cols]
        print(f"| {r['part']} | " + " | ".join("" if v is None else f"{v:,.3g}" if isinstance(v, float) else f"{v:,}"
                                            for v in cells) + " |")
    bf16, fp32 = rows[len(args.sweep_batches)], rows[len(args.sweep_batches) + 1]
    print(f"bf16 / fp32 patches per second: {bf16['patches_per_s'] / fp32['patches_per_s']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
