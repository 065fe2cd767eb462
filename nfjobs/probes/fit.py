"""Minibatch training and evaluation of a classifier head on in-memory features (cached activations)."""

import time
from dataclasses import dataclass
from typing import Callable

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


@torch.no_grad()
def accuracy(model: nn.Module, x: Float[Tensor, "N ..."], y: Int[Tensor, " N"], batch_size: int, device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device, torch.float32, non_blocking=True))
        correct += (logits.argmax(1) == y[i : i + batch_size].to(device)).sum().item()
    return correct / max(len(x), 1)


def fit(
    model: nn.Module, x_train: Float[Tensor, "N ..."], y_train: Int[Tensor, " N"], x_val: Float[Tensor, "M ..."],
    y_val: Int[Tensor, " M"], *, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int, device,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model` with AdamW and cross-entropy (features stay where they are, batches go to `device`);
    `on_epoch` gets `epoch`, mean `loss`, `train_accuracy` and `train_s` after every epoch."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * -(-len(x_train) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    correct = seen = 0
    for epoch in range(epochs):
        model.train()
        correct = seen = 0
        loss_sum = torch.zeros((), device=device)
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            xb = x_train[idx].to(device, torch.float32, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
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
                      "train_accuracy": correct / max(seen, 1), "train_s": time.perf_counter() - start})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - start
    return FitResult(accuracy(model, x_val, y_val, batch_size, device), train_s, correct / max(seen, 1))
