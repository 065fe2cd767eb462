"""Training throughput of the Mamba families (GINR, NF+JEPA) per Mamba backend: pure / triton / mamba_ssm.

Each row runs the train job's step (`family.training_loss` under bf16 autocast on CUDA, optionally
`torch.compile`d as the job does, fused AdamW, gradient clipping, `after_step`) at the seed sizes (the families'
default configs) on random images already on the device, and prints images/s, ms per step and peak memory.
A backend that cannot run here (`nfjobs.models.mamba.backend_problem`) gets a row saying why.

    uv run python bench/mamba_bench.py --tiny                          # CPU smoke run (pure only)
    python bench/mamba_bench.py --out bench.json                       # one GPU: every backend, eager and compiled
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfjobs.jobs.train import Config  # noqa: E402
from nfjobs.models import load_family  # noqa: E402
from nfjobs.models.mamba import backend_problem  # noqa: E402
from nfjobs.nf.training import uses_bf16  # noqa: E402

TINY = {"ginr": dict(patch_size=4, dim=32, pos_emb_dim=8, num_lp=16, depth=1, ff_dim=64, feature_dim=16, head_dim=8,
                     d_state=4),
        "jepa": dict(dim=32, depth=1, ff_dim=64, n_freqs=4, d_state=4, recon_hidden=32)}


def make_config(family: str, backend: str, batch: int, compile_mode: str, tiny: bool) -> Config:
    cfg = Config(model=family, batch_size=batch, compile=compile_mode != "eager",
                 compile_mode="default" if compile_mode == "eager" else compile_mode)
    sub = getattr(cfg, family)
    return replace(cfg, **{family: replace(sub, mamba_backend=backend, **(TINY[family] if tiny else {}))})


def measure(cfg: Config, device: torch.device, warmup: int, iters: int, profile: int = 0) -> dict:
    family = load_family(cfg.model)
    torch.manual_seed(0)
    model = family.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(cfg.precision, device))
    loss_fn = torch.compile(family.training_loss, mode=cfg.compile_mode) if cfg.compile else family.training_loss
    after_step = getattr(family, "after_step", None)
    images_u8 = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    step = torch.zeros((), device=device)

    def train_step():
        images = images_u8.float().div_(255)
        with autocast:
            loss, _ = loss_fn(model, images, step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
        opt.step()
        if after_step is not None:
            after_step(model, step, cfg)
        step.add_(1)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = train_step()
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        loss = train_step()
    sync()
    dt = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    if profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                train_step()
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=profile, max_name_column_width=80),
              flush=True)
    return {"ms_per_step": 1e3 * dt, "images_per_s": cfg.batch_size / dt, "warmup_s": warm_s,
            "peak_gib": peak,
            "loss": loss.item(), "backend_ran": model.backend,
            "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["ginr", "jepa"])
    ap.add_argument("--backends", nargs="+", default=["pure", "triton", "mamba_ssm"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--modes", nargs="+", default=["eager"],
                    help="eager and/or torch.compile modes (default, reduce-overhead, ...), as the train job's compile")
    ap.add_argument("--compiled-batches", nargs="+", type=int, default=None,
                    help="batches at which compiled modes run (default: the largest of --batches)")
    ap.add_argument("--pure-batches", nargs="+", type=int, default=[64],
                    help="batches of the pure scan (eager only: it is slow and memory-hungry)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny models, batch 8, CPU smoke run")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after each measured row, print the N CUDA kernels that take most time over 3 steps")
    ap.add_argument("--out", type=Path, help="append each row as a JSON line here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.batches, args.pure_batches, args.iters, args.warmup = [8], [8], 2, 1
    compiled_batches = args.compiled_batches or [max(args.batches)]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; iters {args.iters} after {args.warmup} warm-up steps")
    print("| family | backend | step | batch | ms/step | images/s | x pure | peak GiB | warm-up s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    pure_ips: dict[str, float] = {}
    for mode in args.modes:  # eager rows first: they come back even if a compiled row runs out of time
        for family in args.families:
            for backend in args.backends:
                if backend == "pure":
                    batches = args.pure_batches if mode == "eager" else []
                else:
                    batches = args.batches if mode == "eager" else compiled_batches
                for batch in batches:
                    problem = backend_problem(backend, str(device)) if backend != "pure" else None
                    row = {"family": family, "backend": backend, "mode": mode, "batch": batch, "device": name}
                    if problem:
                        row["skipped"] = problem
                        print(f"| {family} | {backend} | {mode} | {batch} | – | – | – | – | – |  ({problem})",
                              flush=True)
                    else:
                        cfg = make_config(family, backend, batch, mode, args.tiny)
                        try:
                            row |= measure(cfg, device, args.warmup, min(args.iters, 3) if backend == "pure" else args.iters,
                                           args.profile)
                        except torch.OutOfMemoryError:
                            row["skipped"] = "out of memory"
                        finally:
                            torch.cuda.empty_cache() if device.type == "cuda" else None
                        if "skipped" in row:
                            print(f"| {family} | {backend} | {mode} | {batch} | OOM | | | | |", flush=True)
                        else:
                            if backend == "pure":
                                pure_ips[family] = max(pure_ips.get(family, 0.0), row["images_per_s"])
                            ratio = row["images_per_s"] / pure_ips[family] if family in pure_ips else float("nan")
                            print(f"| {family} | {backend} | {mode} | {batch} | {row['ms_per_step']:.1f} | "
                                  f"{row['images_per_s']:,.0f} | {ratio:.1f} | {row['peak_gib']:.2f} | "
                                  f"{row['warmup_s']:.0f} |", flush=True)
                    if args.out:
                        with args.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
    print("x pure: images/s over the best pure-scan row of the same family (pure runs eager, at small batches).")


if __name__ == "__main__":
    main()
