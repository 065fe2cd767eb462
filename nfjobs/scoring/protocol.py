"""The trait-discovery protocol (seed 004): image score = max over patches; per trait, the prototype with the
best training AP; that prototype's test AP; mAP and its 5% / 95% quantiles over traits.

Every summary carries the constant-predictor mAP, which equals the mean test prevalence of the traits: a
loader bug that marks most traits present (the seed's certainty-as-label bug gave 0.83) shows up here at once.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from nfjobs.scoring.ap import best_prototypes, paired_average_precision
from nfjobs.scoring.scorers import Scorer

PLAUSIBLE_CONSTANT_MAP = 0.5
"""A constant predictor scoring above this mAP means most traits are 'present' in most images: for sparse
binary traits such as CUB's (mean prevalence about 0.1) that is a label bug, not data."""


@torch.no_grad()
def image_scores(
    scorer: Scorer, batches: Iterable[Float[Tensor, "B P D"]], device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "N K"]:
    """Each image's score per prototype: the max over its patches (computed in `dtype`, returned as float32)."""
    out = []
    for acts in batches:
        b, p, d = acts.shape
        out.append(scorer(acts.to(device).to(dtype).reshape(b * p, d)).view(b, p, -1).amax(1).float())
    return torch.cat(out)


def subsample(n: int, n_train: int, seed: int) -> Int[Tensor, " M"]:
    """`n_train` of `n` image indices without replacement, seeded, in increasing order (0 = all)."""
    if n_train == 0 or n_train >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:n_train].sort().values


def constant_map_problem(constant_map: float) -> str | None:
    """A message when the constant-predictor mAP is implausibly high for sparse traits, else None."""
    if constant_map > PLAUSIBLE_CONSTANT_MAP:
        return (f"constant-predictor mAP {constant_map:.3f} > {PLAUSIBLE_CONSTANT_MAP}: most traits are marked "
                "present in most test images; check how trait labels are loaded")
    return None


@dataclass(frozen=True)
class Evaluation:
    """Per-trait results and the summary of one protocol run."""

    prototype: Int[np.ndarray, " T"]
    train_ap: Float[np.ndarray, " T"]
    test_ap: Float[np.ndarray, " T"]
    train_pos: Int[np.ndarray, " T"]
    test_pos: Int[np.ndarray, " T"]
    prevalence: Float[np.ndarray, " T"]
    """Fraction of test images with the trait."""
    constant_ap: Float[np.ndarray, " T"]
    """Test AP of a predictor that gives every image the same score (equals the prevalence)."""
    n_train: int
    n_test: int
    seconds_select: float

    @property
    def scored(self) -> Bool[np.ndarray, " T"]:
        """Traits with at least one test positive: AP is defined and they enter mAP."""
        return self.test_pos > 0

    def summary(self) -> dict[str, float | int | bool]:
        ap = self.test_ap[self.scored]
        constant = float(self.constant_ap[self.scored].mean()) if len(ap) else float("nan")
        return {
            "map": float(ap.mean()) if len(ap) else float("nan"),
            "ap_q05": float(np.quantile(ap, 0.05)) if len(ap) else float("nan"),
            "ap_q95": float(np.quantile(ap, 0.95)) if len(ap) else float("nan"),
            "constant_map": constant,
            "constant_map_implausible": constant_map_problem(constant) is not None,
            "train_map": float(self.train_ap[self.scored].mean()) if len(ap) else float("nan"),
            "n_traits": int(self.scored.sum()),
            "n_traits_no_test_pos": int((~self.scored).sum()),
            "n_traits_no_train_pos": int((self.train_pos == 0).sum()),
            "n_train_images": self.n_train,
            "n_test_images": self.n_test,
            "seconds_select": self.seconds_select,
        }


def evaluate(
    train_scores: Float[Tensor, "N K"],
    train_traits: Bool[Tensor, "N T"],
    test_scores: Float[Tensor, "M K"],
    test_traits: Bool[Tensor, "M T"],
    n_train: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Choose each trait's prototype on (`n_train` seeded) training images; measure it on the test images.

    A trait without positives among the chosen training images gets prototype 0 (every AP ties at 0).
    """
    idx = subsample(len(train_scores), n_train, seed)
    train_traits = train_traits.to(train_scores.device, torch.bool)[idx.to(train_scores.device)]
    test_traits = test_traits.to(test_scores.device, torch.bool)
    start = time.perf_counter()
    chosen = best_prototypes(train_scores[idx.to(train_scores.device)], train_traits)
    if train_scores.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    test_ap = paired_average_precision(test_scores[:, chosen.index.to(test_scores.device)], test_traits)
    test_pos = test_traits.sum(0)
    constant = torch.zeros(test_traits.shape, device=test_traits.device)
    return Evaluation(
        prototype=chosen.index.cpu().numpy(),
        train_ap=chosen.ap.cpu().numpy(),
        test_ap=test_ap.cpu().numpy(),
        train_pos=chosen.n_pos.cpu().numpy(),
        test_pos=test_pos.cpu().numpy(),
        prevalence=(test_pos.double() / len(test_traits)).cpu().numpy(),
        constant_ap=paired_average_precision(constant, test_traits).cpu().numpy(),
        n_train=len(idx),
        n_test=len(test_traits),
        seconds_select=seconds,
    )
