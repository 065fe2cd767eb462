"""Torch helpers of the `train` job: device-resident images, augmentation, LR schedule, RNG state, image grids,
and data parallelism over the ranks of a cell (DistributedDataParallel, each rank a slice of the global batch)."""

import math
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from nfjobs.config import OptimConfig


def to_device(images: UInt8[np.ndarray, "N H W 3"], device: torch.device) -> UInt8[Tensor, "N 3 H W"]:
    """The whole image set as one uint8 tensor on `device` (channels first)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a job's `precision` (`auto` | `bf16` | `fp32`) means bf16 autocast on `device` (`auto`: on CUDA)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def augment(x: Float[Tensor, "B C H W"], pad: int = 4) -> Float[Tensor, "B C H W"]:
    """Random horizontal flips and random `pad`-pixel shifts (reflect padding), per image, on the device."""
    b, _, h, w = x.shape
    flip = torch.rand(b, 1, 1, 1, device=x.device) < 0.5
    x = torch.where(flip, x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy, ox = (torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device)).unbind(0)
    rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def lr_factor(cfg: OptimConfig, total_steps: int):
    """Multiplier of `cfg.lr` at each step: linear warm-up, then cosine down to `min_lr` (or constant)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class _LossOf(torch.nn.Module):
    """A model and its loss function as one module, so DistributedDataParallel sees the whole step as `forward`
    (the model families' losses call `encode` / `decode`, never the model itself)."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, images, step, cfg):
        return self.loss_fn(self.model, images, step, cfg)


def data_parallel(loss_fn, model: torch.nn.Module, device: torch.device):
    """`loss_fn(model, images, step, cfg)` through DistributedDataParallel over `model` (joined process group):
    the same call, with the gradients averaged over the ranks during backward. `static_graph`: a family's
    parameters unused by its loss (an NCE head at `nce_weight = 0`) are unused at every step."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(_LossOf(model, loss_fn), device_ids=[device] if device.type == "cuda" else None,
                                      static_graph=True)
    return lambda _model, images, step, cfg: wrapped(images, step, cfg)


def rank_slice(batch: int, rank: int, world_size: int) -> slice:
    """The images of a global batch of `batch` that `rank` takes (contiguous, disjoint, sizes differing by 1 at
    most)."""
    if batch < world_size:
        raise ValueError(f"batch_size {batch} is smaller than the cell's {world_size} ranks: each needs an image")
    return slice(rank * batch // world_size, (rank + 1) * batch // world_size)


def sum_over_ranks(values: Tensor) -> Tensor:
    """`values` summed over the ranks of the cell (unchanged in a cell of one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's random draws (views, context, augmentation) in one epoch of a cell of several ranks:
    different on each rank, and a function of the epoch only, so a requeued rank draws as before."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def rng_state() -> dict:
    """Every torch RNG this process uses (CPU and, when present, CUDA)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_grid(path: Path, rows: list[Float[Tensor, "B 3 H W"]], scale: int = 4, labels: list[str] | None = None,
              title: str = "") -> None:
    """A PNG with one row of images per tensor (values in [0, 1]), each pixel `scale`× enlarged; `labels` name the
    rows in a left margin and `title` goes above them."""
    from PIL import Image, ImageDraw, ImageFont

    grid = torch.stack(rows).clamp(0, 1)  # (R, B, 3, H, W)
    r, b, _, h, w = grid.shape
    img = (grid.permute(0, 3, 1, 4, 2).reshape(r * h, b * w, 3) * 255).round().to(torch.uint8).cpu().numpy()
    pictures = Image.fromarray(img).resize((b * w * scale, r * h * scale), Image.NEAREST)
    if not labels and not title:
        pictures.save(path)
        return
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(pictures)
    margin = 8 + max((measure.textlength(t, font=font) for t in labels or []), default=0)
    top = 20 if title else 0
    out = Image.new("RGB", (int(margin) + pictures.width, top + pictures.height), "white")
    out.paste(pictures, (int(margin), top))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    for i, text in enumerate(labels or []):
        draw.text((4, top + (i + 0.5) * h * scale - 6), text, fill="black", font=font)
    out.save(path)
