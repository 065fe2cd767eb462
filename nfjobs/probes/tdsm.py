"""Token-decoded spatial maps (TDSM, seed 001): decode each latent token alone over the full pixel grid.

For latents (B, N, D) and grid queries (P, Q) with P = H·W, token k alone as the decoder's context gives a
component image (B, P, 3); stacking the chosen tokens gives (B, K, P, 3), reduced per pixel to a map
(B, H, W, C) with C = K (mean over RGB, L2 norm) or 3K (RGB kept, token-major: channel 3k + c).

Works with any `decode(queries (B, P, Q), latents (B, N, D)) -> (rgb (B, P, 3), hidden)` whose batch items are
independent. The queries are whatever the field's decoder takes for the raster-ordered pixel grid: coordinates
(P, 2) for the project's fields, which embed them (Fourier features) inside `decode`.
"""

import time
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from nfjobs.probes.fit import FitResult

Decode = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Reduce = Literal["mean", "rgb", "l2"]
HeadName = Literal["gap", "gmp", "cnn", "attn"]
Mode = Literal["frozen", "finetune", "two_stage"]


def token_subset(n_tokens: int, every: int = 1, tokens: Sequence[int] = ()) -> list[int]:
    """The latent tokens to decode: an explicit list, or every `every`-th token."""
    if tokens:
        bad = [t for t in tokens if not 0 <= t < n_tokens]
        if bad:
            raise ValueError(f"token indices {bad} are outside 0..{n_tokens - 1}")
        return list(tokens)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return list(range(0, n_tokens, every))


def decode_tokens_loop(
    decode: Decode, queries: Float[Tensor, "P Q"], latents: Float[Tensor, "B N D"], tokens: Sequence[int]
) -> Float[Tensor, "B K P 3"]:
    """One decoder forward per token, batched over images (K forwards of batch B)."""
    q = queries.expand(latents.shape[0], *queries.shape)
    return torch.stack([decode(q, latents[:, k : k + 1])[0] for k in tokens], dim=1)


def decode_tokens_batched(
    decode: Decode, queries: Float[Tensor, "P Q"], latents: Float[Tensor, "B N D"], tokens: Sequence[int],
    chunk: int = 256,
) -> Float[Tensor, "B K P 3"]:
    """Every (image, token) pair as one batch item, `chunk` pairs per decoder forward (bounds memory)."""
    b = latents.shape[0]
    flat = rearrange(latents[:, list(tokens)], "b k d -> (b k) 1 d")
    out = [decode(queries.expand(len(part), *queries.shape), part)[0] for part in flat.split(chunk)]
    return rearrange(torch.cat(out), "(b k) p c -> b k p c", b=b)


def reduce_components(
    components: Float[Tensor, "B K P 3"], how: Reduce, size: tuple[int, int]
) -> Float[Tensor, "B H W C"]:
    """Per-pixel reduction of component images to a spatial map (C = K, or 3K for `rgb`)."""
    if how == "mean":
        x = components.mean(-1, keepdim=True)
    elif how == "l2":
        x = components.norm(dim=-1, keepdim=True)
    elif how == "rgb":
        x = components
    else:
        raise ValueError(f"unknown reduction {how!r}; use mean, rgb or l2")
    return rearrange(x, "b k (h w) c -> b h w (k c)", h=size[0], w=size[1])


def tdsm(
    decode: Decode, queries: Float[Tensor, "P Q"], latents: Float[Tensor, "B N D"], size: tuple[int, int],
    tokens: Sequence[int], how: Reduce = "mean", chunk: int = 0,
) -> Float[Tensor, "B H W C"]:
    """The TDSM of `latents`: batched decoding with `chunk` pairs per forward, or the per-token loop if 0."""
    if chunk > 0:
        components = decode_tokens_batched(decode, queries, latents, tokens, chunk)
    else:
        components = decode_tokens_loop(decode, queries, latents, tokens)
    return reduce_components(components, how, size)


# ---------------------------------------------------------------- heads on maps (B, H, W, C)
class PoolHead(nn.Module):
    """Global average (`gap`) or max (`gmp`) pool over pixels, then linear."""

    def __init__(self, channels: int, n_classes: int, pool: Literal["gap", "gmp"]):
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, maps: Float[Tensor, "B H W C"]) -> Float[Tensor, "B n_classes"]:
        x = maps.mean(dim=(1, 2)) if self.pool == "gap" else maps.amax(dim=(1, 2))
        return self.fc(self.norm(x))


class CNNHead(nn.Module):
    """Small CNN on the map as a C-channel image: 1×1 mix, two 3×3 stride-2 convs, global pool, linear."""

    def __init__(self, channels: int, n_classes: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes),
        )

    def forward(self, maps: Float[Tensor, "B H W C"]) -> Float[Tensor, "B n_classes"]:
        return self.net(rearrange(maps, "b h w c -> b c h w"))


class TokenAttentionHead(nn.Module):
    """Attention over tokens: each token's whole map (H·W·c) is embedded, a learned query pools them."""

    def __init__(self, n_tokens: int, per_token: int, n_classes: int, d_model: int = 128, n_heads: int = 4):
        super().__init__()
        self.n_tokens = n_tokens
        self.embed = nn.Sequential(nn.LayerNorm(per_token), nn.Linear(per_token, d_model))
        self.query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.fc = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, n_classes))

    def forward(self, maps: Float[Tensor, "B H W C"]) -> Float[Tensor, "B n_classes"]:
        per_token = rearrange(maps, "b h w (k c) -> b k (h w c)", k=self.n_tokens)
        x = self.embed(per_token)
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)
        return self.fc(pooled[:, 0])


def make_head(name: HeadName, size: tuple[int, int], n_tokens: int, channels: int, n_classes: int) -> nn.Module:
    """A head for maps of `channels` channels made from `n_tokens` tokens on an H×W grid."""
    if name in ("gap", "gmp"):
        return PoolHead(channels, n_classes, name)
    if name == "cnn":
        return CNNHead(channels, n_classes)
    if name == "attn":
        return TokenAttentionHead(n_tokens, size[0] * size[1] * channels // n_tokens, n_classes)
    raise ValueError(f"unknown TDSM head {name!r}; use gap, gmp, cnn or attn")


# ---------------------------------------------------------------- end-to-end classifier (finetune modes)
class TDSMClassifier(nn.Module):
    """field.encode → TDSM → head, differentiable end to end (for fine-tuning the field with the head).

    `field` is any module with `encode(*context) -> latents (B, N, D)` and `decode(queries, latents)`.
    """

    def __init__(
        self, field: nn.Module, queries: Float[Tensor, "P Q"], size: tuple[int, int], tokens: Sequence[int],
        how: Reduce, head: nn.Module, chunk: int = 0,
    ):
        super().__init__()
        self.field, self.head = field, head
        self.size, self.tokens, self.how, self.chunk = size, list(tokens), how, chunk
        self.register_buffer("queries", queries)

    def forward(self, *context: Tensor) -> Float[Tensor, "B n_classes"]:
        latents = self.field.encode(*context)
        maps = tdsm(self.field.decode, self.queries, latents, self.size, self.tokens, self.how, self.chunk)
        return self.head(maps)


@torch.no_grad()
def tdsm_accuracy(
    clf: TDSMClassifier, contexts: tuple[Tensor, ...], labels: Int[Tensor, " N"], batch_size: int
) -> float:
    """Accuracy of `clf` (eval mode) on contexts indexed by image, `batch_size` images per forward."""
    clf.eval()
    correct = sum((clf(*(c[i : i + batch_size] for c in contexts)).argmax(1) == labels[i : i + batch_size]).sum().item()
                  for i in range(0, len(labels), batch_size))
    return correct / max(len(labels), 1)


def fit_tdsm(
    clf: TDSMClassifier, train: tuple[Tensor, ...], y_train: Int[Tensor, " N"], val: tuple[Tensor, ...],
    y_val: Int[Tensor, " M"], *, mode: Mode, epochs: int, head_lr: float, field_lr: float, batch_size: int,
    head_epochs: int = 0, weight_decay: float = 0.0, seed: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train a TDSM classifier on contexts (tensors indexed by image on the labels' device, e.g. coords and
    RGB), then score it on `val`.

    `frozen`: the head alone for `epochs` (the field stays in eval mode). `finetune`: the field (AdamW at
    `field_lr`) and the head (at `head_lr`) together for `epochs`. `two_stage`: the head alone for
    `head_epochs`, then both together for `epochs`. `on_epoch` gets `epoch` (counted over the stages),
    `field_trained` (0 / 1), mean `loss`, `train_accuracy` and `train_s` after every epoch.
    """
    stages = {"frozen": [(epochs, False)], "finetune": [(epochs, True)],
              "two_stage": [(head_epochs, False), (epochs, True)]}
    if mode not in stages:
        raise ValueError(f"unknown mode {mode!r}; use frozen, finetune or two_stage")
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    correct = seen = done = 0
    for n_epochs, train_field in stages[mode]:
        clf.field.requires_grad_(train_field)
        groups = [{"params": list(clf.head.parameters()), "lr": head_lr}]
        if train_field:
            groups.append({"params": list(clf.field.parameters()), "lr": field_lr})
        opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
        for _ in range(n_epochs):
            clf.train()
            clf.field.train(train_field)
            correct = seen = 0
            loss_sum = torch.zeros((), device=y_train.device)
            for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
                idx = idx.to(y_train.device)
                logits = clf(*(c[idx] for c in train))
                loss = F.cross_entropy(logits, y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += (logits.argmax(1) == y_train[idx]).sum().item()
                seen += len(idx)
                loss_sum += loss.detach() * len(idx)
            done += 1
            if on_epoch is not None:
                on_epoch({"epoch": done, "field_trained": int(train_field), "loss": loss_sum.item() / max(seen, 1),
                          "batch_accuracy": correct / max(seen, 1), "train_s": time.perf_counter() - start})
    clf.field.requires_grad_(True)
    if y_train.device.type == "cuda":
        torch.cuda.synchronize(y_train.device)
    train_s = time.perf_counter() - start
    return FitResult(tdsm_accuracy(clf, val, y_val, batch_size), train_s, correct / max(seen, 1))
