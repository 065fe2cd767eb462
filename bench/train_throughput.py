"""Training throughput of the cascaded Perceiver-IO neural field: the seed notebooks' style vs nfjobs.

The reference re-implements the notebook's math in its style (einsum attention with rearranged heads, PreNorm
wrappers, separate Q/KV projections, fixed latents, `torch.optim.Adam`, `loss.item()` every step). nfjobs runs
`nfjobs.models.perceiver.training_loss` (SDPA, fused QKV, fused AdamW, torch.compile, no host syncs) on the
same math. Both train full-context reconstruction on random images already on the device.

    uv run python bench/train_throughput.py --tiny          # CPU smoke run
    python bench/train_throughput.py                        # seed configuration, batch 256, on a GPU
"""

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfjobs.jobs.train import Config  # noqa: E402
from nfjobs.models import perceiver  # noqa: E402
from nfjobs.models.perceiver_config import PerceiverConfig  # noqa: E402
from nfjobs.nf import fields  # noqa: E402

TINY = PerceiverConfig(fourier_size=16, latent_dims=(32, 48), num_latents=16, cross_heads=2, cross_dim_head=16,
                       self_heads=2, self_dim_head=16, ff_mult=2, processor_depth=1)


# ---------------------------------------------------------------- seed-style reference
class PreNorm(nn.Module):
    def __init__(self, dim, fn, context_dim=None):
        super().__init__()
        self.fn, self.norm = fn, nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x, **kwargs):
        x = self.norm(x)
        if self.norm_context is not None:
            kwargs["context"] = self.norm_context(kwargs["context"])
        return self.fn(x, **kwargs)


class RefFeedForward(nn.Module):
    def __init__(self, dim, mult):
        super().__init__()
        self.up, self.down = nn.Linear(dim, dim * mult * 2), nn.Linear(dim * mult, dim)

    def forward(self, x):
        x, gates = self.up(x).chunk(2, dim=-1)
        return self.down(x * F.gelu(gates))


class RefAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner = heads * dim_head
        self.scale, self.heads = dim_head**-0.5, heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x, context=None):
        context = x if context is None else context
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=self.heads) for t in (q, k, v))
        attn = (torch.einsum("b i d, b j d -> b i j", q, k) * self.scale).softmax(dim=-1)
        out = torch.einsum("b i j, b j d -> b i d", attn, v)
        return self.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=self.heads))


class RefBlock(nn.Module):
    def __init__(self, dim, input_dim, c: PerceiverConfig, residual_dim):
        super().__init__()
        self.latents = nn.Parameter(perceiver.sinusoidal(c.num_latents, dim), requires_grad=False)
        self.cross_attn = PreNorm(dim, RefAttention(dim, input_dim, c.cross_heads, c.cross_dim_head), input_dim)
        self.self_attn = PreNorm(dim, RefAttention(dim, None, c.self_heads, c.self_dim_head))
        self.residual_proj = nn.Linear(residual_dim, dim) if residual_dim and residual_dim != dim else None
        self.ff = PreNorm(dim, RefFeedForward(dim, c.ff_mult))

    def forward(self, context, residual=None):
        latents = repeat(self.latents, "n d -> b n d", b=context.size(0))
        latents = self.cross_attn(latents, context=context) + latents
        if residual is not None:
            latents = latents + (self.residual_proj(residual) if self.residual_proj else residual)
        latents = self.self_attn(latents) + latents
        return self.ff(latents) + latents


class RefPerceiver(nn.Module):
    def __init__(self, c: PerceiverConfig):
        super().__init__()
        qdim = 2 * c.fourier_size
        self.blocks, prev = nn.ModuleList(), None
        for dim in c.latent_dims:
            self.blocks.append(RefBlock(dim, 3 + qdim, c, prev))
            prev = dim
        d = c.latent_dims[-1]
        self.self_attn_blocks = nn.ModuleList(
            nn.ModuleList([PreNorm(d, RefAttention(d, None, c.self_heads, c.self_dim_head)), PreNorm(d, RefFeedForward(d, c.ff_mult))])
            for _ in range(c.processor_depth))
        self.decoder_cross_attn = PreNorm(qdim, RefAttention(qdim, d, c.cross_heads, c.cross_dim_head), d)
        self.decoder_ff = PreNorm(qdim, RefFeedForward(qdim, c.ff_mult))
        self.to_logits = nn.Linear(qdim, 3)

    def forward(self, data, queries):
        residual = None
        for block in self.blocks:
            residual = block(data, residual)
        for attn, ff in self.self_attn_blocks:
            residual = attn(residual) + residual
            residual = ff(residual) + residual
        x = self.decoder_cross_attn(queries, context=residual) + queries
        x = x + self.decoder_ff(x)
        return self.to_logits(x)


def reference_step(c: PerceiverConfig, device, precision):
    model = RefPerceiver(c).to(device)
    gff = fields.GaussianFourierFeatures(2, c.fourier_size, c.fourier_scale).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(imgs):
        b, _, h, w = imgs.shape
        coords = repeat(fields.grid(h, w, device), "n d -> b n d", b=b)
        pixels = rearrange(imgs, "b c h w -> b (h w) c")
        pos = gff(coords)
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            out = model(torch.cat([pixels, pos], dim=-1), pos)
            loss = F.mse_loss(out.float(), pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


# ---------------------------------------------------------------- nfjobs
def nfjobs_step(c: PerceiverConfig, device, compile_: bool, context_frac=1.0, nce_weight=0.0, mode="default",
                clip=True):
    cfg = Config(perceiver=replace(c, learn_latents=False), context_frac=context_frac, nce_weight=nce_weight)
    model = perceiver.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=device.type == "cuda")
    loss_fn = torch.compile(perceiver.training_loss, mode=mode) if compile_ else perceiver.training_loss
    counter = torch.zeros((), dtype=torch.long, device=device)
    bf16 = device.type == "cuda"

    def step(imgs):
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(model, imgs, counter, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        counter.add_(1)
        return loss.detach()

    return model, step


def flops_per_image(c: PerceiverConfig, device, batch=2, **objective) -> float:
    """Forward + backward FLOPs of one training step per image (matmuls and attention, as torch counts them)."""
    model, step = nfjobs_step(c, device, compile_=False, **objective)
    with FlopCounterMode(display=False) as fc:
        step(torch.rand(batch, 3, 32, 32, device=device))
    return fc.get_total_flops() / batch


def measure(step, batch, device, warmup, iters):
    imgs = torch.rand(batch, 3, 32, 32, device=device)
    for _ in range(warmup):
        step(imgs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(iters):
        step(imgs)
    sync()
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return iters * batch / dt, peak


def profile(step, batch, device, top):
    """Print the `top` CUDA kernels by total time over 5 steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    imgs = torch.rand(batch, 3, 32, 32, device=device)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step(imgs)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=90), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, batch 16, few steps (CPU smoke run)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--skip-fp32", action="store_true", help="skip the fp32 reference row")
    ap.add_argument("--modes", action="store_true",
                    help="compare torch.compile modes (max-autotune-no-cudagraphs, reduce-overhead) and no clipping "
                         "instead of the sparse and Soft-InfoNCE rows")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the N CUDA kernels that take most time in the compiled full-context step")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    c = TINY if args.tiny else PerceiverConfig()
    batch, iters, warmup = (16, 3, 1) if args.tiny else (args.batch, args.iters, args.warmup)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    on_gpu = device.type == "cuda"
    rows = []
    runs = [("reference (seed style), fp32", "full", lambda: reference_step(c, device, "fp32"))] if not args.skip_fp32 else []
    runs += [
        ("reference (seed style), bf16 autocast", "full", lambda: reference_step(c, device, "bf16" if on_gpu else "fp32")),
        ("nfjobs, eager", "full", lambda: nfjobs_step(c, device, compile_=False)),
        ("nfjobs, torch.compile", "full", lambda: nfjobs_step(c, device, compile_=on_gpu)),
        ("nfjobs, torch.compile, sparse 0.2", "sparse", lambda: nfjobs_step(c, device, on_gpu, context_frac=0.2)),
        ("nfjobs, torch.compile, Soft-InfoNCE", "nce", lambda: nfjobs_step(c, device, on_gpu, nce_weight=0.1)),
    ]
    if args.modes:  # the compile-mode comparison replaces the sparse and Soft-InfoNCE rows
        runs = [r for r in runs if r[1] == "full"] + [
            ("nfjobs, torch.compile, no grad clipping", "full", lambda: nfjobs_step(c, device, on_gpu, clip=False)),
            ("nfjobs, compile reduce-overhead (CUDA graphs)", "full",
             lambda: nfjobs_step(c, device, on_gpu, mode="reduce-overhead")),
            ("nfjobs, compile max-autotune-no-cudagraphs", "full",
             lambda: nfjobs_step(c, device, on_gpu, mode="max-autotune-no-cudagraphs")),
        ]
    objective_args = {"full": {}, "sparse": {"context_frac": 0.2}, "nce": {"nce_weight": 0.1}}
    flops = {k: flops_per_image(c, device, **v) for k, v in objective_args.items() if any(r[1] == k for r in runs)}
    n_params = sum(p.numel() for p in perceiver.build(Config(perceiver=c)).parameters())
    print(f"device: {torch.cuda.get_device_name() if on_gpu else 'cpu'}; torch {torch.__version__}; batch {batch}; "
          f"params {n_params / 1e6:.1f} M; GFLOP/image/step: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in flops.items()))
    for name, objective, make in runs:
        torch.manual_seed(0)
        t = time.perf_counter()
        _, step = make()
        ips, peak = measure(step, batch, device, warmup, iters)
        rows.append((name, ips, ips * flops[objective] / 1e12, peak))
        print(f"{name}: {ips:,.0f} images/s ({time.perf_counter() - t:.0f} s incl. compile)", flush=True)
        if args.profile and name == "nfjobs, torch.compile":
            profile(step, batch, device, args.profile)
        del step
        if on_gpu:
            torch.cuda.empty_cache()
    base = rows[1][1] if not args.skip_fp32 else rows[0][1]
    print(f"\n| implementation | images/s | achieved TFLOP/s | peak memory (GiB) | vs reference bf16 |")
    print("|---|---:|---:|---:|---:|")
    for name, ips, tf, peak in rows:
        print(f"| {name} | {ips:,.0f} | {tf:.1f} | {peak:.1f} | {ips / base:.2f}× |")


if __name__ == "__main__":
    main()
