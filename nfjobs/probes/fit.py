"""Minibatch training and evaluation of a classifier head on cached activations: in memory (`fit`) or any batches
(`fit_batches`, e.g. streamed from a cache larger than memory)."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


@dataclass(frozen=True)
class FitResult:
    accuracy: float
    """Accuracy on the evaluation set after the last epoch."""
    train_s: float
    """Seconds spent training (evaluation excluded)."""
    train_accuracy: float
    """Accuracy on the training batches of the last epoch (with dropout on)."""


Batches = Iterable[tuple[Float[Tensor, "B ..."], Int[Tensor, " B"]]]


@torch.no_grad()
def accuracy(model: nn.Module, batches: Batches, device) -> float:
    model.eval()
    correct = seen = 0
    for xb, yb in batches:
        logits = model(xb.to(device, torch.float32, non_blocking=True))
        correct += (logits.argmax(1) == yb.to(device)).sum().item()
        seen += len(yb)
    return correct / max(seen, 1)


def fit(
    model: nn.Module, x_train: Float[Tensor, "N ..."], y_train: Int[Tensor, " N"], x_val: Float[Tensor, "M ..."],
    y_val: Int[Tensor, " M"], *, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int, device,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model` with AdamW and cross-entropy on in-memory features (they stay where they are, batches go to
    `device`), a fresh seeded permutation per epoch; see `fit_batches`."""
    gen = torch.Generator().manual_seed(seed)

    def train_batches(_epoch: int) -> Batches:
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            yield x_train[idx], y_train[idx]

    val_batches = ((x_val[i : i + batch_size], y_val[i : i + batch_size]) for i in range(0, len(x_val), batch_size))
    return fit_batches(model, train_batches, val_batches, steps_per_epoch=-(-len(x_train) // batch_size),
                       epochs=epochs, lr=lr, weight_decay=weight_decay, device=device, on_epoch=on_epoch)


def fit_batches(
    model: nn.Module, train_batches: Callable[[int], Batches], val_batches: Batches, *, steps_per_epoch: int,
    epochs: int, lr: float, weight_decay: float, device, on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model` with AdamW (one-cycle schedule over `epochs` · `steps_per_epoch` steps) and cross-entropy on
    the batches `train_batches(epoch)` yields, then score it on `val_batches`; `on_epoch` gets `epoch`, mean
    `loss`, `train_accuracy` and `train_s` after every epoch."""
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    correct = seen = 0
    for epoch in range(epochs):
        model.train()
        correct = seen = 0
        loss_sum = torch.zeros((), device=device)
        for xb, yb in train_batches(epoch):
            xb = xb.to(device, torch.float32, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            loss_sum += loss.detach() * len(yb)
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "loss": loss_sum.item() / max(seen, 1),
                      "batch_accuracy": correct / max(seen, 1), "train_s": time.perf_counter() - start})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - start
    return FitResult(accuracy(model, val_batches, device), train_s, correct / max(seen, 1))
