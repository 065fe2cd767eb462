"""Training throughput of the Mamba families (GINR, NF+JEPA) per Mamba backend and step mode.

Each row runs the train job's step (`nfjobs.models.train_step.make_train_step`: `family.training_loss` under
bf16 autocast on CUDA, fused AdamW, gradient clipping, `after_step`) at the seed sizes (the families' default
configs) on random images already on the device, and prints images/s, ms per step, peak memory and achieved
TFLOP/s (the step's FLOPs counted once per family and batch by `torch.utils.flop_counter` on an eager step:
matrix products and attention; the Triton scan and elementwise work are not counted, so this is a floor).
Step modes: `eager`; `default` / `reduce-overhead` (`torch.compile` of `training_loss`, as the train job's
`compile_mode`); `graph` (compiled, then the whole step captured as one CUDA graph: the train job's default on
CUDA); `eager-graph` (captured, not compiled). A backend that cannot run here gets a row saying why.

`--before DIR` adds rows (impl `before`) for the `triton` backend with another version of
`nfjobs/models/mamba.py` and `nfjobs/models/scan_triton.py` in DIR (e.g. `git show HEAD~3:nfjobs/models/mamba.py
> DIR/mamba.py`, likewise `scan_triton.py`), in the same run. `--kernels` times the scan alone (forward, and
forward + backward) at the families' shapes, before and after, with its errors against the before version;
`--resources` compiles the scan kernels for sm_90 here (no GPU) and prints their registers and spills.

    uv run python bench/mamba_bench.py --tiny                          # CPU smoke run (pure only)
    python bench/mamba_bench.py --backends triton --modes default graph --batches 16 256 --before /tmp/old
"""

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nfjobs.models.mamba as mamba_mod  # noqa: E402
from nfjobs.jobs.train import Config  # noqa: E402
from nfjobs.models import load_family  # noqa: E402
from nfjobs.models.mamba import backend_problem  # noqa: E402
from nfjobs.models.train_step import WARMUP, make_train_step  # noqa: E402
from nfjobs.nf.training import uses_bf16  # noqa: E402

TINY = {"ginr": dict(patch_size=4, dim=32, pos_emb_dim=8, num_lp=16, depth=1, ff_dim=64, feature_dim=16, head_dim=8,
                     d_state=4),
        "jepa": dict(dim=32, depth=1, ff_dim=64, n_freqs=4, d_state=4, recon_hidden=32)}
MODES = ("eager", "default", "reduce-overhead", "graph", "eager-graph")


def make_config(family: str, backend: str, batch: int, mode: str, tiny: bool) -> Config:
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    compiled = mode in ("default", "reduce-overhead", "graph")
    cfg = Config(model=family, batch_size=batch, compile=compiled,
                 compile_mode="reduce-overhead" if mode == "reduce-overhead" else "default",
                 cuda_graph=mode in ("graph", "eager-graph"))
    sub = getattr(cfg, family)
    return replace(cfg, **{family: replace(sub, mamba_backend=backend, **(TINY[family] if tiny else {}))})


def load_before(folder: Path):
    """The `mamba` module of another version (its scan under its own op names, beside the current one's)."""
    scan_src = (folder / "scan_triton.py").read_text().replace('"nfjobs::', '"nfjobs_before::')
    mods = {}
    for name, src in (("nfjobs_before_scan", scan_src),
                      ("nfjobs_before_mamba", (folder / "mamba.py").read_text().replace(
                          "from nfjobs.models.scan_triton import", "from nfjobs_before_scan import"))):
        path = Path("/tmp") / f"{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(name, path)
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[name] = mods[name]
        spec.loader.exec_module(mods[name])
    return mods["nfjobs_before_scan"], mods["nfjobs_before_mamba"]


def count_flops(cfg: Config, device: torch.device) -> float:
    """FLOPs of one eager forward + backward (FlopCounterMode: matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    family = load_family(cfg.model)
    model = family.build(cfg).to(device)
    images = torch.rand(cfg.batch_size, 3, 32, 32, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(cfg.precision, device))
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss, _ = family.training_loss(model, images, torch.zeros((), device=device), cfg)
        loss.backward()
    return float(counter.get_total_flops())


def measure(cfg: Config, device: torch.device, warmup: int, iters: int, profile: int = 0) -> dict:
    family = load_family(cfg.model)
    torch.manual_seed(0)
    model = family.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=device.type == "cuda")
    step = torch.zeros((), device=device)
    train_step = make_train_step(family, model, opt, params, cfg, step, device)
    images_u8 = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=device)

    def one_step():
        return train_step(images_u8.float().div_(255))[0]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(max(warmup, WARMUP + 1) if cfg.cuda_graph else warmup):
        loss = one_step()
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        loss = one_step()
    sync()
    dt = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    if profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                one_step()
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=profile, max_name_column_width=80),
              flush=True)
    graphed = getattr(train_step, "graph", None) is not None
    return {"ms_per_step": 1e3 * dt, "images_per_s": cfg.batch_size / dt, "warmup_s": warm_s, "peak_gib": peak,
            "loss": loss.item(), "backend_ran": model.backend, "graphed": graphed,
            "graph_failed": getattr(train_step, "failed", None),
            "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6}


def kernel_table(before_scan, device: torch.device, chunk_options: list[int]) -> None:
    """The scan alone at the families' shapes: ms forward, ms forward + backward, error against `before`."""
    import triton.testing

    from nfjobs.models import scan_triton as now

    shapes = [("GINR", b, 512, True) for b in (16, 64, 256)] + [("JEPA ctx", b, 102, True) for b in (128, 512)] + \
        [("JEPA target", b, 1024, False) for b in (128, 512)]
    print("| shape | B | L | grad | impl | chunks | fwd ms | fwd+bwd ms | max rel err vs before |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for name, bsz, length, grad in shapes:
        torch.manual_seed(0)
        e, n = 512, 16
        args = [torch.randn(bsz, length, e, device=device, dtype=torch.bfloat16),
                torch.nn.functional.softplus(torch.randn(bsz, length, e, device=device) - 2),
                -torch.exp(torch.rand(e, n, device=device) * 2.7),
                torch.randn(bsz, length, n, device=device, dtype=torch.bfloat16),
                torch.randn(bsz, length, n, device=device, dtype=torch.bfloat16), torch.randn(e, device=device)]
        if grad:
            args = [x.requires_grad_() for x in args]
        dy = torch.randn(bsz, length, e, device=device)
        impls = ([("before", before_scan.selective_scan, None)] if before_scan else []) + \
            [("after", now.selective_scan, c) for c in chunk_options]
        ref = None
        for impl, fn, chunks in impls:
            call = (lambda fn=fn, chunks=chunks: fn(*args)) if chunks is None else \
                (lambda fn=fn, chunks=chunks: fn(*args, chunks=chunks))
            with torch.no_grad():
                fwd_ms = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
            both_ms = float("nan")
            err = float("nan")
            if grad:
                def fb(call=call):
                    return torch.autograd.grad(call(), args, dy)
                both_ms = triton.testing.do_bench(fb, warmup=25, rep=100, return_mode="median")
                outs = [call().detach(), *fb()]
            else:
                with torch.no_grad():
                    outs = [call()]
            if ref is None:
                ref = outs
            else:
                err = max(float((o.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30))
                          for o, r in zip(outs, ref, strict=True))
            shown = "–" if chunks is None else (f"auto={now.plan(bsz, length, e)[0]}" if chunks == 0 else chunks)
            print(f"| {name} | {bsz} | {length} | {grad} | {impl} | {shown} | {fwd_ms:.3f} | {both_ms:.3f} | "
                  f"{err:.1e} |", flush=True)
        del args, dy, ref
        torch.cuda.empty_cache()


def resource_report(module, label: str) -> None:
    """Registers, stack and local-memory traffic of a scan module's kernels compiled for sm_90 (Hopper), without a
    GPU: Triton compiles ahead of time and its bundled cuobjdump reads the cubin."""
    import os
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tool = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    bf16 = {"u_ptr", "b_ptr", "c_ptr"}
    for name in ("_scan_fwd", "_fwd_summary", "_bwd_summary", "_scan_bwd"):
        fn = getattr(module, name, None)
        if fn is None:
            continue
        consts = {k: v for k, v in {"N": 16, "BLOCK": module.BLOCK_E, "SEG": getattr(module, "SEG", None),
                                     "STORE_H": False, "STORE_CK": True}.items() if k in fn.arg_names}
        sig = {a: "constexpr" if a in consts else ("*bf16" if a in bf16 else "*fp32") if a.endswith("_ptr") else "i32"
               for a in fn.arg_names}
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": 1})
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{label}{name}.cubin"
        path.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
        sass = subprocess.run([tool, "--dump-sass", path], capture_output=True, text=True).stdout
        line = next((x.strip() for x in usage.splitlines() if "REG:" in x), usage.strip()[-200:])
        print(f"| {label} | {name} | {' '.join(line.split()[:3])} | {sass.count('LDL')} / {sass.count('STL')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["ginr", "jepa"])
    ap.add_argument("--backends", nargs="+", default=["pure", "triton", "mamba_ssm"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--modes", nargs="+", default=["eager"], help=f"step modes: {', '.join(MODES)}")
    ap.add_argument("--compiled-batches", nargs="+", type=int, default=None,
                    help="batches at which modes other than eager run (default: --batches)")
    ap.add_argument("--pure-batches", nargs="+", type=int, default=[64],
                    help="batches of the pure scan (eager only: it is slow and memory-hungry)")
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="a folder with another version's mamba.py and scan_triton.py: its triton rows beside ours")
    ap.add_argument("--before-modes", nargs="+", default=None, help="modes of the before rows (default: --modes)")
    ap.add_argument("--kernels", action="store_true", help="time the scan alone first (CUDA)")
    ap.add_argument("--kernel-chunks", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    ap.add_argument("--no-steps", action="store_true", help="only --kernels / --resources")
    ap.add_argument("--resources", action="store_true",
                    help="registers and spills of the scan kernels for sm_90, compiled here (no GPU needed)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny models, batch 8, CPU smoke run")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after each measured row, print the N CUDA kernels that take most time over 3 steps")
    ap.add_argument("--out", type=Path, help="append each row as a JSON line here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.batches, args.pure_batches, args.iters, args.warmup = [8], [8], 2, 1
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; iters {args.iters} after {args.warmup} warm-up steps")
    before_scan, before_mamba = load_before(args.before) if args.before else (None, None)
    if args.resources:
        from nfjobs.models import scan_triton

        print("| impl | kernel | registers, stack, shared | LDL / STL in SASS |\n|---|---|---|---|")
        for label, module in (("before", before_scan), ("after", scan_triton)):
            if module is not None:
                resource_report(module, label)
    if args.kernels and device.type == "cuda":
        kernel_table(before_scan, device, args.kernel_chunks)
    if args.no_steps:
        return
    print("| family | backend | impl | step | batch | ms/step | images/s | TFLOP/s | peak GiB | warm-up s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    flops: dict[tuple[str, int], float] = {}
    current_make_mamba = mamba_mod.make_mamba
    rows = []
    before_modes = (args.before_modes or args.modes) if before_mamba is not None else []
    for family in args.families:
        for backend in args.backends:
            for mode in dict.fromkeys([*args.modes, *before_modes]):
                if backend == "pure":
                    batches = args.pure_batches if mode == "eager" else []
                else:
                    batches = args.batches if mode == "eager" else (args.compiled_batches or args.batches)
                impls = [i for i, modes in (("after", args.modes),
                                            ("before", before_modes if backend == "triton" else [])) if mode in modes]
                for batch in batches:
                    for impl in impls:
                        rows.append((mode, family, backend, batch, impl))
    rows.sort(key=lambda r: (r[1], r[3], r[2], r[4] == "before"))  # family, batch, backend; after first
    for mode, family, backend, batch, impl in rows:
        problem = backend_problem(backend, str(device)) if backend != "pure" else None
        row = {"family": family, "backend": backend, "impl": impl, "mode": mode, "batch": batch, "device": name}
        head = f"| {family} | {backend} | {impl} | {mode} | {batch} |"
        if problem:
            row["skipped"] = problem
            print(f"{head} – | – | – | – | – |  ({problem})", flush=True)
        else:
            cfg = make_config(family, backend, batch, mode, args.tiny)
            mamba_mod.make_mamba = before_mamba.make_mamba if impl == "before" else current_make_mamba
            try:
                key = (family, batch)
                if key not in flops:
                    flops[key] = count_flops(make_config(family, "pure" if device.type == "cpu" else backend,
                                                         batch, "eager", args.tiny), device)
                row |= measure(cfg, device, args.warmup, min(args.iters, 3) if backend == "pure" else args.iters,
                               args.profile)
                row["tflops"] = flops[key] * row["images_per_s"] / batch / 1e12
            except torch.OutOfMemoryError:
                row["skipped"] = "out of memory"
            finally:
                mamba_mod.make_mamba = current_make_mamba
                torch.cuda.empty_cache() if device.type == "cuda" else None
            if "skipped" in row:
                print(f"{head} OOM | | | | |", flush=True)
            else:
                note = f" (not captured: {row['graph_failed']})" if row.get("graph_failed") else ""
                print(f"{head} {row['ms_per_step']:.2f} | {row['images_per_s']:,.0f} | {row['tflops']:.1f} | "
                      f"{row['peak_gib']:.2f} | {row['warmup_s']:.0f} |{note}", flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    print("TFLOP/s: the FLOP counter's matrix products, convolutions and attention only (a floor).")


if __name__ == "__main__":
    main()
