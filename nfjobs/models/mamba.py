"""Sequence mixers for the GINR and JEPA encoders: Mamba (CUDA kernels, Triton or pure PyTorch) or self-attention.

Backends:
- `mamba_ssm`: `mamba_ssm.Mamba` (its compiled CUDA kernels; the optional extra `cuda`, built with
  `scripts/install-mamba-ssm.sh`);
- `triton`: the same layer with the selective scan of `nfjobs.models.scan_triton` (Triton kernels: no compiled
  extension; CUDA devices);
- `pure`: `mambapy.mamba.MambaBlock`, a pure-PyTorch selective scan (parallel scan).
  All three Mamba backends have the parameter names and shapes of `mamba_ssm.Mamba`, so a state dict trained
  with one loads into the others and they compute the same function;
- `transformer`: bidirectional multi-head self-attention (seed 002's fallback);
- `auto`: the first of `mamba_ssm`, `triton` (CUDA only), `pure` that works on the model's device.

A Mamba backend counts as working only when it imports (for `mamba_ssm`: its selective-scan kernel
`selective_scan_cuda` too, which mamba-ssm 2.3 silently leaves out unless built with MAMBA_KEEP_CUDA_BUILD=TRUE)
and a tiny forward runs on the device (`backend_problem`).

The encoder block mirrors `mamba_ssm.modules.block.Block` with `fused_add_norm=False` (the reference encoder):
`residual += h; h = mixer(LN(residual)); residual += h; h = mlp(LN2(residual))`.
"""

import functools
import os
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

Backend = Literal["mamba_ssm", "triton", "pure", "transformer"]
MambaKind = Literal["mamba_ssm", "triton", "pure"]


@functools.cache
def backend_problem(backend: MambaKind, device: str) -> str | None:
    """Why the Mamba `backend` cannot run on `device` (None: it can): it must import and run a tiny forward there.

    Cached per process; `device` is a `torch.device` string ("cpu", "cuda:0")."""
    dev = torch.device(device)
    try:
        if backend == "mamba_ssm":
            import mamba_ssm  # noqa: F401

            try:
                import selective_scan_cuda  # noqa: F401  (the compiled kernel mamba_ssm.Mamba calls)
            except ImportError as err:
                return (f"mamba_ssm imports but its selective-scan CUDA kernel does not ({err}); reinstall it "
                        "with scripts/install-mamba-ssm.sh (MAMBA_KEEP_CUDA_BUILD=TRUE)")
        elif backend == "triton" and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            return "the triton scan needs a CUDA device"
        layer = make_mamba(backend, 16, d_state=4).to(dev)
        with torch.no_grad():
            layer(torch.randn(1, 8, 16, device=dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    except Exception as err:  # ImportError, a missing/broken compiled kernel, no kernel image for this GPU, ...
        return f"{backend} fails a tiny forward on {dev}: {type(err).__name__}: {err}"
    return None


def mamba_ssm_available(device: torch.device | str = "cuda") -> bool:
    """Whether `mamba_ssm` with its selective-scan kernel runs on `device`."""
    return backend_problem("mamba_ssm", str(torch.device(device))) is None


def resolve_backend(choice: str, device: torch.device | str | None = None) -> Backend:
    """The concrete backend for a config choice; `device` (None, "" or "auto": CUDA when visible) is where the
    model will run. `auto` warns when it falls back from `mamba_ssm` on a CUDA device."""
    if choice in ("pure", "transformer"):
        return choice
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    if choice == "auto":
        problems = {}
        for backend in ("mamba_ssm", "triton") if dev.type == "cuda" else ("mamba_ssm",):
            problems[backend] = backend_problem(backend, str(dev))
            if problems[backend] is None:
                if dev.type == "cuda" and backend != "mamba_ssm":
                    warnings.warn(f"mamba_backend=auto runs {backend!r}: {problems['mamba_ssm']}", stacklevel=2)
                return backend
        if dev.type == "cuda":
            warnings.warn("mamba_backend=auto falls back to the slow 'pure' scan: " + "; ".join(problems.values()),
                          stacklevel=2)
        return "pure"
    if choice in ("mamba_ssm", "triton"):
        problem = backend_problem(choice, str(dev))
        if problem is not None:
            raise RuntimeError(f"mamba_backend={choice!r} cannot run here: {problem}; use 'auto' or 'pure'")
        return choice
    raise ValueError(f"unknown mamba backend {choice!r}; valid: auto, mamba_ssm, triton, pure, transformer")


def make_mamba(backend: MambaKind, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> nn.Module:
    """One unidirectional Mamba layer `(B, L, D) -> (B, L, D)` with mamba_ssm-compatible parameters."""
    if backend == "mamba_ssm":
        from mamba_ssm import Mamba

        return Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)
    from mambapy.mamba import MambaBlock, MambaConfig

    config = MambaConfig(d_model=dim, n_layers=1, d_state=d_state, d_conv=d_conv, expand_factor=expand)
    if backend == "triton":
        return _triton_block(MambaBlock)(config)
    return MambaBlock(config)


@functools.cache
def _triton_block(base: type) -> type:
    """mambapy's `MambaBlock` with its selective scan replaced by the Triton kernels."""
    from nfjobs.models.scan_triton import selective_scan

    class TritonMambaBlock(base):
        def forward(self, x: Float[Tensor, "B L D"]) -> Float[Tensor, "B L D"]:
            x, z = self.in_proj(x).chunk(2, dim=-1)
            x = F.silu(causal_conv(x, self.conv1d.weight, self.conv1d.bias))
            return self.out_proj(self.ssm(x, z) * F.silu(z))

        def ssm(self, x: Float[Tensor, "B L E"], z: Float[Tensor, "B L E"]) -> Float[Tensor, "B L E"]:
            n, rank = self.config.d_state, self.config.dt_rank
            dt, b, c = self.x_proj(x).split([rank, n, n], dim=-1)
            delta = F.softplus(self.dt_proj(dt).float())
            return selective_scan(x, delta, -torch.exp(self.A_log.float()), b, c, self.D).to(x.dtype)

    return TritonMambaBlock


def causal_conv(x: Float[Tensor, "B L E"], weight: Float[Tensor, "E 1 K"], bias: Float[Tensor, " E"] | None
                ) -> Float[Tensor, "B L E"]:
    """Depthwise causal convolution over time (mambapy's `conv1d` with K − 1 zeros of left padding).

    Under `torch.compile` as K shifted multiply-adds, which Inductor fuses with the neighbouring elementwise work
    (forward and backward) instead of calling cuDNN's depthwise kernels in a channels-first copy."""
    length, k = x.shape[1], weight.shape[-1]
    if not torch.compiler.is_compiling():
        out = F.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=x.shape[-1])
        return out[..., :length].transpose(1, 2)
    w = weight[:, 0].to(x.dtype)  # (E, K)
    padded = F.pad(x, (0, 0, k - 1, 0))
    out = sum(padded[:, i:i + length] * w[:, i] for i in range(k))
    return out if bias is None else out + bias.to(x.dtype)


class BiMamba(nn.Module):
    """Bidirectional Mamba: mean of a forward scan and a scan of the reversed sequence (own weights each)."""

    def __init__(self, backend: MambaKind, dim: int, **mamba_kwargs):
        super().__init__()
        self.fwd = make_mamba(backend, dim, **mamba_kwargs)
        self.rev = make_mamba(backend, dim, **mamba_kwargs)

    def forward(self, x: Float[Tensor, "B L D"]) -> Float[Tensor, "B L D"]:
        backward = self.rev(x.flip(1)).flip(1)
        return (self.fwd(x) + backward) / 2


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (the `transformer` backend's mixer)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Float[Tensor, "B L D"]) -> Float[Tensor, "B L D"]:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)"))


class EncoderBlock(nn.Module):
    """Add → LayerNorm → mixer, add → LayerNorm → feed-forward; carries the residual stream separately."""

    def __init__(self, mixer: nn.Module, dim: int, ff_dim: int):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim), mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))

    def forward(self, h: Float[Tensor, "B L D"], residual: Float[Tensor, "B L D"] | None
                ) -> tuple[Float[Tensor, "B L D"], Float[Tensor, "B L D"]]:
        residual = h if residual is None else h + residual
        h = self.mixer(self.norm1(residual))
        residual = h + residual
        return self.mlp(self.norm2(residual)), residual


class SequenceEncoder(nn.Module):
    """Stack of bidirectional blocks. `backend` records the mixer actually used (for result rows)."""

    def __init__(self, backend: Backend, dim: int, depth: int, ff_dim: int, final_norm: bool = True,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, heads: int = 4):
        super().__init__()
        self.backend = backend

        def mixer() -> nn.Module:
            if backend == "transformer":
                return SelfAttention(dim, heads)
            return BiMamba(backend, dim, d_state=d_state, d_conv=d_conv, expand=expand)

        self.blocks = nn.ModuleList(EncoderBlock(mixer(), dim, ff_dim) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim) if final_norm else None

    def forward(self, x: Float[Tensor, "B L D"]) -> Float[Tensor, "B L D"]:
        h, residual = x, None
        for block in self.blocks:
            h, residual = block(h, residual)
        return h if self.final_norm is None else self.final_norm(h + residual)
