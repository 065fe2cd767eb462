"""Training throughput of the cascaded Perceiver-IO neural field: the seed notebooks' style vs nfjobs.

The reference re-implements the notebook's math in its style (einsum attention with rearranged heads, PreNorm
wrappers, separate Q/KV projections, fixed latents, `torch.optim.Adam`, `loss.item()` every step). nfjobs runs
`nfjobs.models.perceiver.training_loss` (SDPA, Triton GEGLU, fused AdamW, torch.compile, no host syncs) on the
same math. Both train full-context reconstruction on random images already on the device.

    uv run python bench/train_throughput.py --tiny          # CPU smoke run
    python bench/train_throughput.py                        # seed configuration, batch 256, on a GPU

`--before FILE` adds the same rows for another version of `nfjobs/models/perceiver.py` (e.g. written by
`git show REV:nfjobs/models/perceiver.py > FILE`), side by side with the current one: training throughput,
field forward (what the cache job runs), TDSM decode, and PSNR after the same steps from the same weights.
"""

import argparse
import importlib.util
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
from nfjobs.nf.views import map_coords, sample_affine, warp  # noqa: E402

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
        return self.to_logits(x), x


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
            out, _ = model(torch.cat([pixels, pos], dim=-1), pos)
            loss = F.mse_loss(out.float(), pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


def reference_nce_step(c: PerceiverConfig, device, precision, nce_weight=0.1):
    """Seed style with Soft-InfoNCE: two affine views each encoded, view A decoded at grid + anchors, view B at
    candidates, einsum similarities and soft targets from pairwise distances (`nfjobs.nf.nce`'s math)."""
    nce = Config().nce
    model = RefPerceiver(c).to(device)
    head = nn.Linear(2 * c.fourier_size, nce.proj_dim).to(device)
    gff = fields.GaussianFourierFeatures(2, c.fourier_size, c.fourier_scale).to(device)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)

    def step(imgs):
        b, _, h, w = imgs.shape
        coords = repeat(fields.grid(h, w, device), "n d -> b n d", b=b)
        a, t = sample_affine(b, nce, device)
        views = [rearrange(x, "b c h w -> b (h w) c") for x in (imgs, warp(imgs, a, t))]
        anchors = torch.rand(b, nce.n_anchors, 2, device=device) * 2 - 1
        candidates = torch.rand(b, nce.n_candidates, 2, device=device) * 2 - 1
        pos = gff(coords)
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            out, hid_a = model(torch.cat([views[0], pos], dim=-1), torch.cat([pos, gff(anchors)], dim=1))
            _, hid_b = model(torch.cat([views[1], pos], dim=-1), gff(candidates))
            recon = F.mse_loss(out[:, : h * w].float(), views[0])
            za = F.normalize(head(hid_a[:, h * w :]).float(), dim=-1)
            zb = F.normalize(head(hid_b).float(), dim=-1)
            logits = torch.einsum("b i d, b j d -> b i j", za, zb) / nce.tau
            dist = torch.cdist(map_coords(anchors, a, t), candidates) ** 2
            wts = torch.exp(-dist / (2 * nce.sigma**2))
            wts = wts / (wts.sum(-1, keepdim=True) + 1e-8)
            loss = recon + nce_weight * -(wts * logits.log_softmax(-1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


# ---------------------------------------------------------------- nfjobs
def load_module(path: str):
    """Another version of `nfjobs/models/perceiver.py` (a file the developer wrote), as a module."""
    spec = importlib.util.spec_from_file_location(f"perceiver_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nfjobs_step(c: PerceiverConfig, device, compile_: bool, context_frac=1.0, nce_weight=0.0, mode="default",
                clip=True, module=perceiver):
    cfg = Config(perceiver=replace(c, learn_latents=False), context_frac=context_frac, nce_weight=nce_weight)
    model = module.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=device.type == "cuda")
    if compile_:
        torch._dynamo.reset()  # a fresh trace: SDPA backend flags and the module version take effect
    loss_fn = torch.compile(module.training_loss, mode=mode) if compile_ else module.training_loss
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


def flops_per_image(c: PerceiverConfig, device, batch=2, module=perceiver, **objective) -> float:
    """Forward + backward FLOPs of one training step per image (matmuls and attention, as torch counts them)."""
    model, step = nfjobs_step(c, device, compile_=False, module=module, **objective)
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


CATEGORIES = {  # kernel-name fragments → what the time is spent on
    "attention (SDPA)": ("flash", "fmha", "cudnn", "attention", "sdpa"),
    "GEMM (cuBLAS)": ("gemm", "nvjet", "xmma", "cutlass", "cublas", "splitk"),
    "optimizer": ("adam", "multi_tensor", "foreach"),
    "fused pointwise/reduction (Triton)": ("triton", "geglu"),
}


def profile(step, batch, device, top):
    """Print CUDA time per step by kind of kernel and the `top` kernels by total time, over 5 steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    imgs = torch.rand(batch, 3, 32, 32, device=device)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step(imgs)
        torch.cuda.synchronize()
    events = prof.key_averages()
    per_cat: dict[str, list] = {}
    kernels = []
    for e in events:
        t = (getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)) / 5e3  # ms per step
        name = e.key.lower()
        cat = next((k for k, frags in CATEGORIES.items() if any(f in name for f in frags)), "other")
        per_cat.setdefault(cat, [0.0, 0])
        per_cat[cat][0] += t
        per_cat[cat][1] += e.count / 5
        kernels.append((t, e.count / 5, cat, e.key))
    total = sum(v[0] for v in per_cat.values())
    print(f"\nGPU time per step: {total:.1f} ms")
    print("| kernels | ms per step | share | launches per step |\n|---|---:|---:|---:|")
    for cat, (ms, n) in sorted(per_cat.items(), key=lambda kv: -kv[1][0]):
        print(f"| {cat} | {ms:.2f} | {ms / total:.0%} | {n:.0f} |")
    print(f"\ntop {top} kernels (ms per step, launches per step, kind, name):")
    for t, n, cat, name in sorted(kernels, reverse=True)[:top]:
        print(f"{t:7.2f} {n:5.0f}  {cat.split()[0]:10s} {name[:110]}")
    print("top 'other' kernels:")
    for t, n, cat, name in sorted(k for k in kernels if k[2] == "other")[::-1][:6]:
        print(f"{t:7.2f} {n:5.0f}  {name[:110]}", flush=True)


def timed(fn, device, repeats=5):
    """Median seconds of `fn()` after one warm-up call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def inference(module, c: PerceiverConfig, device, batch: int, tdsm_images: int) -> dict[str, float]:
    """Eager bf16 inference as the cache job runs it: field forward (images/s) and the batched TDSM decode of
    every latent token ((image, token) pairs/s, 256 pairs per decoder forward)."""
    from nfjobs.probes.tdsm import tdsm

    torch.manual_seed(0)
    model = module.build(Config(perceiver=c)).to(device).eval()
    imgs = torch.rand(batch, 3, 32, 32, device=device)
    grid = fields.grid(32, 32, device)
    tokens = range(c.num_latents)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        encode_s = timed(lambda: model.encode_images(imgs), device)
        lat = model.encode_images(imgs[:tdsm_images])
        tdsm_s = timed(lambda: tdsm(model.decode, grid, lat, (32, 32), tokens, "mean", chunk=256), device)
    return {"field forward, images/s": batch / encode_s, "TDSM decode, pairs/s": tdsm_images * len(tokens) / tdsm_s}


def same_steps_psnr(module, c: PerceiverConfig, device, steps: int, batch: int, state: dict, on_gpu: bool,
                    compile_: bool, seed: int = 0):
    """Train `steps` steps from the weights `state` on the built-in shapes (fixed batch order, AdamW 1e-3, clip
    1.0, bf16 on the GPU) and return held-out full-context PSNR and the training seconds."""
    from nfjobs.data import builtin

    images = torch.from_numpy(builtin.generate(batch * 8 + 512, seed=0).images).to(device)
    images = images.permute(0, 3, 1, 2).float() / 255
    train, val = images[:-512], images[-512:]
    cfg = Config(perceiver=c)
    model = module.build(cfg).to(device)
    model.load_state_dict(state)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=on_gpu)
    if compile_:
        torch._dynamo.reset()
    loss_fn = torch.compile(module.training_loss) if compile_ else module.training_loss
    gen = torch.Generator(device).manual_seed(seed)
    torch.manual_seed(seed)
    t = time.perf_counter()
    for i in range(steps):
        idx = torch.randint(0, len(train), (batch,), device=device, generator=gen)
        with torch.autocast(device.type, torch.bfloat16, enabled=on_gpu):
            loss, _ = loss_fn(model, train[idx], torch.tensor(i, device=device), cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
    final = loss.item()
    seconds = time.perf_counter() - t
    model.eval()
    with torch.autocast(device.type, torch.bfloat16, enabled=on_gpu):
        rows = module.evaluate(model, val, cfg)
    psnr = next(r["psnr"] for r in rows if r["eval_context_frac"] == 1.0)
    return psnr, final, seconds


SDPA_BACKENDS = ("flash", "cudnn", "mem_efficient", "math")


def set_sdpa(only: str | None) -> None:
    """Allow only SDPA backend `only` (None: all, torch's own choice)."""
    for b in SDPA_BACKENDS:
        getattr(torch.backends.cuda, f"enable_{b}_sdp")(only is None or b == only)


def print_table(rows) -> None:
    print("\n| implementation | images/s | achieved TFLOP/s | peak memory (GiB) | vs seed style bf16, same objective |")
    print("|---|---:|---:|---:|---:|")
    for name, ips, tf, peak, b in rows:
        print(f"| {name} | {ips:,.0f} | {tf:.1f} | {peak:.1f} | {ips / b:.2f}× |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, batch 16, few steps (CPU smoke run)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--skip-fp32", action="store_true", help="skip the fp32 reference row")
    ap.add_argument("--skip-eager", action="store_true", help="skip the nfjobs eager row")
    ap.add_argument("--before", metavar="FILE", help="another version of nfjobs/models/perceiver.py to compare")
    ap.add_argument("--also", nargs="*", default=(), metavar="FILE",
                    help="more versions of nfjobs/models/perceiver.py: a full-context row each, named by file stem")
    ap.add_argument("--sdpa", nargs="*", default=(), choices=SDPA_BACKENDS,
                    help="extra full-context rows with only this SDPA backend allowed")
    ap.add_argument("--modes", action="store_true",
                    help="compare torch.compile modes (max-autotune-no-cudagraphs, reduce-overhead) and no clipping "
                         "instead of the sparse and Soft-InfoNCE rows")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print GPU time by kernel kind and the N CUDA kernels that take most time in the compiled "
                         "full-context step")
    ap.add_argument("--cudagraphs", action="store_true", help="a full-context row compiled with reduce-overhead")
    ap.add_argument("--skip-sparse", action="store_true", help="no sparse-context row")
    ap.add_argument("--nce-before", action="store_true", help="a Soft-InfoNCE row for the --before version too")
    ap.add_argument("--psnr-only", action="store_true", help="only the same-steps PSNR comparison")
    ap.add_argument("--psnr-seeds", type=int, default=1, metavar="N",
                    help="repeat the same-steps comparison over N seeds (initial weights and batch order)")
    ap.add_argument("--psnr-eager", action="store_true", help="the same-steps PSNR runs without torch.compile")
    ap.add_argument("--full-only", action="store_true", help="no sparse and Soft-InfoNCE rows")
    ap.add_argument("--inference", action="store_true", help="field forward and TDSM decode rows (eager, bf16)")
    ap.add_argument("--psnr-steps", type=int, default=0, metavar="N",
                    help="train N steps from the same weights (current and --before) and compare held-out PSNR")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    c = TINY if args.tiny else PerceiverConfig()
    batch, iters, warmup = (16, 3, 1) if args.tiny else (args.batch, args.iters, args.warmup)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    on_gpu = device.type == "cuda"
    before = load_module(args.before) if args.before else None
    versions = [("nfjobs", perceiver)] + ([("nfjobs before", before)] if before else [])
    ref = "bf16" if on_gpu else "fp32"
    # (name, objective, make, only SDPA backend); each row's ratio is against the seed-style row of its objective
    runs = [("reference (seed style), fp32", "full", lambda: reference_step(c, device, "fp32"), None)] if not args.skip_fp32 else []
    runs += [
        ("reference (seed style), bf16 autocast", "full", lambda: reference_step(c, device, ref), None),
    ]
    if not args.full_only:
        runs.append(("reference (seed style), bf16 autocast, Soft-InfoNCE", "nce",
                     lambda: reference_nce_step(c, device, ref), None))
    if not args.skip_eager:
        runs.append(("nfjobs, eager", "full", lambda: nfjobs_step(c, device, compile_=False), None))
    for label, m in reversed(versions):
        runs.append((f"{label}, torch.compile", "full", lambda m=m: nfjobs_step(c, device, on_gpu, module=m), None))
    for path in args.also:
        runs.append((f"nfjobs {Path(path).stem}, torch.compile", "full",
                     lambda m=load_module(path): nfjobs_step(c, device, on_gpu, module=m), None))
    runs += [(f"nfjobs, torch.compile, SDPA {b} only", "full", lambda: nfjobs_step(c, device, on_gpu), b)
             for b in args.sdpa]
    if args.cudagraphs and not args.modes:
        runs.append(("nfjobs, compile reduce-overhead (CUDA graphs)", "full",
                     lambda: nfjobs_step(c, device, on_gpu, mode="reduce-overhead"), None))
    if args.modes:
        runs += [
            ("nfjobs, torch.compile, no grad clipping", "full", lambda: nfjobs_step(c, device, on_gpu, clip=False), None),
            ("nfjobs, compile reduce-overhead (CUDA graphs)", "full",
             lambda: nfjobs_step(c, device, on_gpu, mode="reduce-overhead"), None),
            ("nfjobs, compile max-autotune-no-cudagraphs", "full",
             lambda: nfjobs_step(c, device, on_gpu, mode="max-autotune-no-cudagraphs"), None),
        ]
    elif not args.full_only:
        if not args.skip_sparse:
            runs.append(("nfjobs, torch.compile, sparse 0.2", "sparse",
                         lambda: nfjobs_step(c, device, on_gpu, context_frac=0.2), None))
        for label, m in reversed(versions if args.nce_before else versions[:1]):
            runs.append((f"{label}, torch.compile, Soft-InfoNCE", "nce",
                         lambda m=m: nfjobs_step(c, device, on_gpu, nce_weight=0.1, module=m), None))
    if args.psnr_only:
        runs = []
    objective_args = {"full": {}, "sparse": {"context_frac": 0.2}, "nce": {"nce_weight": 0.1}}
    counted = before or perceiver  # the plain model's FLOPs: the same work counted for every row
    flops = {k: flops_per_image(c, device, module=counted, **v) for k, v in objective_args.items()
             if any(r[1] == k for r in runs)}
    n_params = sum(p.numel() for p in perceiver.build(Config(perceiver=c)).parameters())
    print(f"device: {torch.cuda.get_device_name() if on_gpu else 'cpu'}; torch {torch.__version__}; batch {batch}; "
          f"params {n_params / 1e6:.1f} M; GFLOP/image/step: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in flops.items()))
    rows, base = [], {}
    for name, objective, make, only in runs:
        torch.manual_seed(0)
        if on_gpu:
            set_sdpa(only)
            torch._inductor.config.fx_graph_cache = only is None  # a cached graph would keep the old backend
            torch._functorch.config.enable_autograd_cache = only is None
        t = time.perf_counter()
        _, step = make()
        ips, peak = measure(step, batch, device, warmup, iters)
        if name.startswith("reference (seed style), bf16") or (not on_gpu and name.startswith("reference")):
            base.setdefault("nce" if objective == "nce" else "full", ips)
        rows.append((name, ips, ips * flops[objective] / 1e12, peak, base.get("nce" if objective == "nce" else "full")))
        print(f"{name}: {ips:,.0f} images/s ({time.perf_counter() - t:.0f} s incl. compile)", flush=True)
        if args.profile and name in ("nfjobs, torch.compile", "nfjobs before, torch.compile") and on_gpu:
            profile(step, batch, device, args.profile)
        del step
        if on_gpu:
            set_sdpa(None)
            torch.cuda.empty_cache()
    if rows:
        print_table(rows)
    if args.inference:
        inf = {label: inference(m, c, device, batch, 16 if on_gpu else 2) for label, m in versions}
        print("\n| eager bf16 inference | " + " | ".join(label for label, _ in versions) + " | ratio |")
        print("|---|" + "---:|" * (len(versions) + 1))
        for key in inf["nfjobs"]:
            vals = [inf[label][key] for label, _ in versions]
            print(f"| {key} | " + " | ".join(f"{v:,.0f}" for v in vals) + f" | {vals[0] / vals[-1]:.2f}× |")
    if args.psnr_steps:
        print(f"\n| {args.psnr_steps} steps, same weights and batches | seed | held-out PSNR full context (dB) | "
              "last loss | train s (incl. compile) |\n|---|---:|---:|---:|---:|")
        psnrs: dict[str, list[float]] = {label: [] for label, _ in versions}
        for seed in range(args.psnr_seeds):  # a seed sets the shared initial weights and the batch order
            torch.manual_seed(seed)
            state = perceiver.build(Config(perceiver=c)).state_dict()
            for label, m in versions:
                psnr, final, secs = same_steps_psnr(m, c, device, args.psnr_steps, batch, state, on_gpu,
                                                    compile_=on_gpu and not args.psnr_eager, seed=seed)
                psnrs[label].append(psnr)
                print(f"| {label} | {seed} | {psnr:.4f} | {final:.6g} | {secs:.0f} |", flush=True)
        if args.psnr_seeds > 1:
            for label, vals in psnrs.items():
                t = torch.tensor(vals, dtype=torch.float64)
                print(f"| {label} | mean ± std over {len(vals)} | {t.mean():.4f} ± {t.std():.4f} | | |")

if __name__ == "__main__":
    main()
