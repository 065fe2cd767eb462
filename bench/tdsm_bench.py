"""TDSM decoding, per-token loop vs batched (B·K) with several chunk sizes: time and peak memory side by side.

    uv run python bench/tdsm_bench.py                       # CPU, small: 2 images × 32 tokens
    uv run python bench/tdsm_bench.py --device cuda --batch 64 --every 1

Uses the project's Perceiver field at the seeds' size (random weights: speed and memory do not depend on
them). Each variant runs in a fresh subprocess so CPU peak memory (max RSS growth) is its own; on CUDA the
peak is `torch.cuda.max_memory_allocated` above the model and latents.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root (nfjobs is not installed)


@dataclass(frozen=True)
class Args:
    device: str = "cpu"
    batch: int = 2
    """Images per TDSM call."""
    every: int = 8
    """Decode every `every`-th of the 256 latent tokens."""
    chunks: tuple[int, ...] = (0, 16, 64)
    """0 = the per-token loop; otherwise (image, token) pairs per decoder forward."""
    repeats: int = 3
    """Timed repeats (the median is reported) after one warm-up."""
    size: int = 32


def measure(args: Args, chunk: int) -> dict:
    """Run in a subprocess: time and peak extra memory of one variant."""
    import resource
    import statistics
    import time

    import torch

    from nfjobs.models.perceiver import PerceiverField
    from nfjobs.models.perceiver_config import PerceiverConfig
    from nfjobs.nf import fields
    from nfjobs.probes.tdsm import tdsm, token_subset

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = PerceiverField(PerceiverConfig()).to(device).eval()
    coords = fields.grid(args.size, args.size, device)
    with torch.no_grad():
        latents = model.encode(coords.expand(args.batch, -1, -1), torch.rand(args.batch, args.size**2, 3, device=device))
    tokens = token_subset(latents.shape[1], args.every)

    def once():
        with torch.no_grad():
            out = tdsm(model.decode, coords, latents, (args.size, args.size), tokens, "mean", chunk)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    once()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    peak_mb = ((torch.cuda.max_memory_allocated() - base_cuda) / 2**20 if device.type == "cuda"
               else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)
    return {"variant": "loop" if chunk == 0 else f"batched chunk={chunk}", "tokens": len(tokens),
            "pairs": args.batch * len(tokens), "median_s": statistics.median(times), "peak_mb": peak_mb}


def main(args: Args) -> None:
    rows = []
    for chunk in args.chunks:
        cmd = [sys.executable, __file__, "--child", json.dumps({**args.__dict__, "chunks": list(args.chunks)}), str(chunk)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    loop = next((r["median_s"] for r in rows if r["variant"] == "loop"), None)
    print(f"device={args.device} batch={args.batch} every={args.every} grid={args.size}x{args.size}")
    print(f"{'variant':<22}{'tokens':>7}{'pairs':>7}{'median s':>10}{'vs loop':>9}{'peak MB':>9}")
    for r in rows:
        speed = f"{loop / r['median_s']:.2f}x" if loop else ""
        print(f"{r['variant']:<22}{r['tokens']:>7}{r['pairs']:>7}{r['median_s']:>10.3f}{speed:>9}{r['peak_mb']:>9.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raw = json.loads(sys.argv[2])
        print(json.dumps(measure(Args(**{**raw, "chunks": tuple(raw["chunks"])}), int(sys.argv[3]))))
    else:
        import tyro

        main(tyro.cli(Args))
