"""Probes on mean-pooled features: multinomial logistic regression and distance-weighted k-NN, in torch."""

import time

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from nfjobs.probes.fit import FitResult


def standardize(
    x_train: Float[Tensor, "N D"], x_val: Float[Tensor, "M D"]
) -> tuple[Float[Tensor, "N D"], Float[Tensor, "M D"]]:
    """Zero mean, unit variance per feature, with statistics of the training set."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    return (x_train - mean) / std, (x_val - mean) / std


def logistic_regression(
    x_train: Float[Tensor, "N D"], y_train: Int[Tensor, " N"], x_val: Float[Tensor, "M D"], y_val: Int[Tensor, " M"],
    *, n_classes: int, c: float = 0.1, max_iter: int = 500,
) -> FitResult:
    """Multinomial logistic regression on standardized features, full-batch L-BFGS on the features' device.

    Minimises mean cross-entropy + ||W||² / (2·c·N), the objective of scikit-learn's `LogisticRegression(C=c)`.
    """
    start = time.perf_counter()
    x_train, x_val = standardize(x_train.float(), x_val.float())
    n, d = x_train.shape
    w = torch.zeros(d, n_classes, device=x_train.device, requires_grad=True)
    b = torch.zeros(n_classes, device=x_train.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ w + b, y_train) + (w**2).sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = ((x_train @ w + b).argmax(1) == y_train).float().mean().item()
        val_acc = ((x_val @ w + b).argmax(1) == y_val).float().mean().item()
    return FitResult(val_acc, time.perf_counter() - start, train_acc)


@torch.no_grad()
def knn(
    x_train: Float[Tensor, "N D"], y_train: Int[Tensor, " N"], x_val: Float[Tensor, "M D"], y_val: Int[Tensor, " M"],
    *, n_classes: int, k: int = 20, chunk: int = 1024,
) -> FitResult:
    """k-NN with Euclidean distance, votes weighted by 1/distance (scikit-learn's `weights="distance"`)."""
    start = time.perf_counter()
    x_train, x_val = x_train.float(), x_val.float()
    k = min(k, len(x_train))
    correct = 0
    for i in range(0, len(x_val), chunk):
        dist = torch.cdist(x_val[i : i + chunk], x_train)
        d, idx = dist.topk(k, dim=1, largest=False)
        votes = torch.zeros(len(d), n_classes, device=d.device)
        votes.scatter_add_(1, y_train[idx], 1.0 / d.clamp_min(1e-12))
        correct += (votes.argmax(1) == y_val[i : i + chunk]).sum().item()
    return FitResult(correct / max(len(x_val), 1), time.perf_counter() - start, float("nan"))
