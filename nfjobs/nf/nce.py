"""Soft-InfoNCE: InfoNCE with Gaussian soft positives around the known correspondence."""

from jaxtyping import Float
from torch import Tensor


def soft_targets(
    mapped_anchors: Float[Tensor, "B Na 2"], candidates: Float[Tensor, "B Nb 2"], sigma: float
) -> Float[Tensor, "B Na Nb"]:
    """`w_ij ∝ exp(-|x_j - T(x_i)|² / 2σ²)`, normalised over candidates j (an anchor with no candidate
    near its image keeps weights near 0 and adds nothing)."""
    sqd = (mapped_anchors.unsqueeze(2) - candidates.unsqueeze(1)).square().sum(-1)
    w = (-sqd / (2 * sigma**2)).exp()
    return w / (w.sum(dim=-1, keepdim=True) + 1e-8)


def soft_infonce(
    phi_a: Float[Tensor, "B Na D"],
    phi_b: Float[Tensor, "B Nb D"],
    mapped_anchors: Float[Tensor, "B Na 2"],
    candidates: Float[Tensor, "B Nb 2"],
    tau: float = 0.1,
    sigma: float = 0.08,
) -> Float[Tensor, ""]:
    """Mean over anchors of the cross-entropy between the soft targets and `softmax(φ_a·φ_b / τ)`.

    `phi_a`, `phi_b` are L2-normalised embeddings of anchors (view A) and candidates (view B);
    `mapped_anchors` are the anchors' coordinates carried into view B by the view's map T.
    """
    logits = (phi_a.float() @ phi_b.float().transpose(1, 2)) / tau
    w = soft_targets(mapped_anchors.float(), candidates.float(), sigma)
    return -(w * logits.log_softmax(dim=-1)).sum(-1).mean()
