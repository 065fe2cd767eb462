"""Sequence mixers for the GINR and JEPA encoders: Mamba (CUDA kernels or pure PyTorch) or self-attention.

Backends:
- `mamba_ssm`: `mamba_ssm.Mamba` (CUDA kernels; the optional extra `cuda`);
- `pure`: `mambapy.mamba.MambaBlock`, a pure-PyTorch selective scan (parallel scan). Its parameters have the
  names and shapes of `mamba_ssm.Mamba`'s, so a state dict trained with one backend loads into the other and
  both compute the same function;
- `transformer`: bidirectional multi-head self-attention (seed 002's fallback);
- `auto`: `mamba_ssm` when it imports and the model runs on a CUDA device, else `pure`.

The encoder block mirrors `mamba_ssm.modules.block.Block` with `fused_add_norm=False` (the reference encoder):
`residual += h; h = mixer(LN(residual)); residual += h; h = mlp(LN2(residual))`.
"""

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

Backend = Literal["mamba_ssm", "pure", "transformer"]


@functools.cache
def mamba_ssm_available() -> bool:
    """Whether `mamba_ssm` (and its compiled CUDA extension) imports."""
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken compiled extension
        return False
    return True


def resolve_backend(choice: str, device: torch.device | str | None = None) -> Backend:
    """The concrete backend for a config choice; `device` (None, "" or "auto": CUDA when visible) is where the
    model will run."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = torch.device(device).type == "cuda"
    if choice == "auto":
        return "mamba_ssm" if on_cuda and mamba_ssm_available() else "pure"
    if choice == "mamba_ssm":
        if not mamba_ssm_available():
            raise RuntimeError("mamba_backend='mamba_ssm' but mamba_ssm does not import; install the `cuda` extra "
                               "(uv sync --extra cuda) on a CUDA machine, or use 'pure' / 'auto'")
        if not on_cuda:
            raise RuntimeError("mamba_backend='mamba_ssm' needs a CUDA device; use 'pure' or 'auto' on CPU")
        return "mamba_ssm"
    if choice in ("pure", "transformer"):
        return choice
    raise ValueError(f"unknown mamba backend {choice!r}; valid: auto, mamba_ssm, pure, transformer")


def make_mamba(backend: Literal["mamba_ssm", "pure"], dim: int, d_state: int = 16, d_conv: int = 4,
               expand: int = 2) -> nn.Module:
    """One unidirectional Mamba layer `(B, L, D) -> (B, L, D)` with mamba_ssm-compatible parameters."""
    if backend == "mamba_ssm":
        from mamba_ssm import Mamba

        return Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)
    from mambapy.mamba import MambaBlock, MambaConfig

    return MambaBlock(MambaConfig(d_model=dim, n_layers=1, d_state=d_state, d_conv=d_conv, expand_factor=expand))


class BiMamba(nn.Module):
    """Bidirectional Mamba: mean of a forward scan and a scan of the reversed sequence (own weights each)."""

    def __init__(self, backend: Literal["mamba_ssm", "pure"], dim: int, **mamba_kwargs):
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
