"""Exact average precision for every prototype x trait pair at once, equal to scikit-learn's.

`sklearn.metrics.average_precision_score` is the step-wise AP over distinct score thresholds. With ties that is

    AP = (1 / P) * sum over positives a of  cpos(a) / R(a),

where R(a) = #{images scoring >= s(a)} and cpos(a) = #{positives scoring >= s(a)}: every positive in a group of
tied scores takes the precision at the group's end. R depends only on the prototype, so each prototype's scores
are sorted once and the order is shared by all traits. Two exact paths use it:

- dense (common traits): gather the label rows in score order, cumulative-sum them, read the counts at the
  end of each tie group: O(N) per prototype and trait;
- sparse (rare traits): gather R at the trait's positives and sort those P ranks; cpos is then the position
  in that order (moved to the end of runs of equal ranks): O(P log P) per prototype and trait.

On a GPU every trait takes the dense path: it streams through memory in a few large kernels per chunk, where
the sparse path would launch several small kernels per trait. On the CPU the cheaper path is chosen per trait.

Traits without positives get AP 0 (what scikit-learn returns, with a warning) and are reported by `n_pos == 0`.
Prototypes are processed in chunks so that memory stays bounded on CPU and GPU.
"""

import functools
import importlib.util
import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 28}
"""Default bound on prototypes x images x dense traits handled at once, per device type (the temporaries take
about 16 bytes each: 0.5 GB on CPU, 4 GB on a GPU)."""


@dataclass(frozen=True)
class Selection:
    """The best prototype per trait by average precision."""

    index: Int[Tensor, " T"]
    """Prototype with the highest AP for each trait (the lowest index among equal APs)."""
    ap: Float[Tensor, " T"]
    """That prototype's AP (0 for traits without positives)."""
    n_pos: Int[Tensor, " T"]
    """Positives per trait; AP is undefined (reported as 0) where this is 0."""


def _max_ranks(sorted_values: Float[Tensor, "K N"]) -> Int[Tensor, "K N"]:
    """At each position of rows sorted (either way): 1 + the position of the end of its run of equal values."""
    k, n = sorted_values.shape
    pos = torch.arange(n, device=sorted_values.device).expand(k, n)
    is_last = torch.ones_like(sorted_values, dtype=torch.bool)
    is_last[:, :-1] = sorted_values[:, 1:] != sorted_values[:, :-1]
    end = torch.where(is_last, pos, n).flip(1).cummin(1).values.flip(1)
    return end + 1


def _dense(order: Int[Tensor, "K N"], ranks: Int[Tensor, "K N"], labels: Bool[Tensor, "N T"]) -> Float[Tensor, "K T"]:
    """sum over positives of cpos / R, by cumulative sums of the label rows in score order."""
    k, n = order.shape
    y = labels.to(torch.float32).index_select(0, order.flatten()).view(k, n, -1)
    counts = y.cumsum(1)  # integers below 2**24: exact in float32
    if _has_ties(ranks):  # every member of a tie group counts the positives up to the group's end
        counts = counts.gather(1, (ranks - 1).unsqueeze(-1).expand_as(counts))
    counts.mul_(y)
    weights = ranks.to(torch.float64).reciprocal().unsqueeze(1)  # (K, 1, N)
    return torch.bmm(weights, counts.to(torch.float64)).squeeze(1)


def _sparse(img_ranks: Int[Tensor, "K N"], positives: Int[Tensor, " P"], ties: bool) -> Float[Tensor, " K"]:
    """sum over positives of cpos / R for one trait, from the sorted ranks of its positives."""
    r = img_ranks[:, positives].sort(dim=1).values
    cpos = _max_ranks(r) if ties else torch.arange(1, r.shape[1] + 1, device=r.device).expand_as(r)
    return (cpos.to(torch.float64) / r.to(torch.float64)).sum(1)


@functools.cache
def _numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _has_ties(ranks: Int[Tensor, "K N"]) -> bool:
    return bool((ranks != torch.arange(1, ranks.shape[1] + 1, device=ranks.device)).any())


def _sparse_is_cheaper(n_pos: int, n: int) -> bool:
    """Cost model measured on a 2-core CPU (sorting costs about 20 ns per rank, the dense path about 10 ns per
    image): sort the positives' ranks unless a trait is common."""
    return n_pos * max(math.log2(n_pos), 1.0) < 4 * n


def average_precision(
    scores: Float[Tensor, "N K"], labels: Bool[Tensor, "N T"], chunk_elements: int | None = None,
    backend: Literal["auto", "numba", "torch"] = "auto",
) -> tuple[Float[Tensor, "K T"], Int[Tensor, " T"]]:
    """AP of every prototype (column of `scores`) for every trait (column of `labels`), and positives per trait.

    Equal to `average_precision_score(labels[:, t], scores[:, k])` for all k, t (float64), on the device of
    `scores`; traits without positives get 0. `auto` uses the compiled CPU kernel (`ap_numba`) for CPU tensors
    when numba is installed, and the torch paths below otherwise (always on a GPU).
    """
    if backend == "numba" or (backend == "auto" and scores.device.type == "cpu" and _numba_available()):
        from nfjobs.scoring.ap_numba import average_precision_numba

        ap, n_pos = average_precision_numba(scores.numpy(), labels.numpy())
        return torch.from_numpy(ap), torch.from_numpy(n_pos)
    n, k_total = scores.shape
    chunk_elements = chunk_elements or CHUNK_ELEMENTS.get(scores.device.type, CHUNK_ELEMENTS["cpu"])
    labels = labels.to(device=scores.device, dtype=torch.bool)
    n_pos = labels.sum(0)
    counts, on_cpu = n_pos.tolist(), scores.device.type == "cpu"
    sparse = [t for t, p in enumerate(counts) if p > 0 and on_cpu and _sparse_is_cheaper(p, n)]
    dense = sorted({t for t, p in enumerate(counts) if p > 0} - set(sparse))
    dense_labels = labels[:, dense]
    positives = [labels[:, t].nonzero().squeeze(1) for t in sparse]
    total = torch.zeros(k_total, labels.shape[1], dtype=torch.float64, device=scores.device)
    chunk = max(1, chunk_elements // (n * max(len(dense), 1)))
    for start in range(0, k_total, chunk):
        s = scores[:, start : start + chunk].T
        values, order = s.sort(dim=1, descending=True)
        ranks = _max_ranks(values)
        block = total[start : start + chunk]
        if dense:
            block[:, dense] = _dense(order, ranks, dense_labels)
        if sparse:
            img_ranks = torch.empty_like(ranks, dtype=torch.int32).scatter_(1, order, ranks.to(torch.int32))
            ties = _has_ties(ranks)
            for t, pos in zip(sparse, positives):
                block[:, t] = _sparse(img_ranks, pos, ties)
    return total / n_pos.clamp(min=1).to(torch.float64), n_pos


def best_prototypes(
    scores: Float[Tensor, "N K"], labels: Bool[Tensor, "N T"], chunk_elements: int | None = None,
    backend: Literal["auto", "numba", "torch"] = "auto",
) -> Selection:
    """For each trait, the prototype with the highest AP over these images."""
    ap, n_pos = average_precision(scores, labels, chunk_elements, backend)
    best, index = ap.max(0)
    return Selection(index=index, ap=best, n_pos=n_pos)


def paired_average_precision(
    scores: Float[Tensor, "N T"], labels: Bool[Tensor, "N T"], chunk_elements: int | None = None
) -> Float[Tensor, " T"]:
    """AP of score column t for trait t, for every t (e.g. each trait's chosen prototype on test images)."""
    n, n_traits = scores.shape
    chunk_elements = chunk_elements or CHUNK_ELEMENTS.get(scores.device.type, CHUNK_ELEMENTS["cpu"])
    labels = labels.to(device=scores.device, dtype=torch.bool)
    out = torch.zeros(n_traits, dtype=torch.float64, device=scores.device)
    chunk = max(1, chunk_elements // n)
    for start in range(0, n_traits, chunk):
        values, order = scores[:, start : start + chunk].T.sort(dim=1, descending=True)
        ranks = _max_ranks(values)
        y = labels[:, start : start + chunk].T.gather(1, order).to(torch.int32)
        counts = y.cumsum(1, dtype=torch.int32).gather(1, ranks - 1) * y
        n_pos = y.sum(1).clamp(min=1).to(torch.float64)
        out[start : start + chunk] = (counts.to(torch.float64) / ranks.to(torch.float64)).sum(1) / n_pos
    return out
