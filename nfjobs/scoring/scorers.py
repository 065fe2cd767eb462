"""Prototype scorers: K directions or centres in activation space that score every activation vector.

Every scorer follows `Scorer`: `train(activations)` learns from training activations (patches of the training
images), `scorer(activations)` returns (B, K) scores (higher = more like the prototype), and `state_dict()` /
`load_state_dict()` hold everything learned, so a trained scorer is saved once and reused by key (`save`,
`load`).
"""

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from nfjobs.store.files import atomic_write_bytes, load_tensors


@runtime_checkable
class Scorer(Protocol):
    name: str

    @property
    def n_prototypes(self) -> int: ...

    def train(self, activations: Float[Tensor, "N D"]) -> None: ...

    def __call__(self, activations: Float[Tensor, "B D"]) -> Float[Tensor, "B K"]: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...


class _Base:
    """Holds the learned tensors of a scorer by name; `state_dict` is them, moved to the CPU."""

    name = ""
    _state: tuple[str, ...] = ()

    def __init__(self, n_prototypes: int, seed: int = 0):
        if n_prototypes < 1:
            raise ValueError(f"n_prototypes must be >= 1, got {n_prototypes}")
        self.k, self.seed = n_prototypes, seed

    @property
    def n_prototypes(self) -> int:
        return self.k

    def state_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).detach().cpu() for name in self._state}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in self._state:
            setattr(self, name, state[name])

    def to(self, device: torch.device | str) -> "_Base":
        for name in self._state:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)


class RandomVectors(_Base):
    """K random unit vectors (seeded); score = dot product."""

    name = "random"
    _state = ("directions",)

    def train(self, activations: Float[Tensor, "N D"]) -> None:
        g = self._generator(activations.device)
        w = torch.randn(self.k, activations.shape[1], generator=g, device=activations.device)
        self.directions = w / w.norm(dim=1, keepdim=True)

    def __call__(self, activations: Float[Tensor, "B D"]) -> Float[Tensor, "B K"]:
        return activations @ self.directions.to(activations.dtype).T  # bf16 activations: a bf16 matmul


def _sq_dists(x: Float[Tensor, "B D"], c: Float[Tensor, "K D"]) -> Float[Tensor, "B K"]:
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_(min=0)


class KMeans(_Base):
    """k-means (k-means++ initialisation, Lloyd iterations) on up to `max_points` activations; score = -distance."""

    name = "kmeans"
    _state = ("centres",)

    def __init__(self, n_prototypes: int, seed: int = 0, n_iter: int = 20, max_points: int = 100_000,
                 batch: int = 4096):
        super().__init__(n_prototypes, seed)
        self.n_iter, self.max_points, self.batch = n_iter, max_points, batch

    def _assign(self, x: Float[Tensor, "N D"]) -> tuple[Tensor, Tensor]:
        """Nearest centre and squared distance of every point, in batches."""
        parts = [_sq_dists(x[i : i + self.batch], self.centres).min(1) for i in range(0, len(x), self.batch)]
        return torch.cat([p.indices for p in parts]), torch.cat([p.values for p in parts])

    def train(self, activations: Float[Tensor, "N D"]) -> None:
        g = self._generator(activations.device)
        x = activations.float()
        if len(x) > self.max_points:
            x = x[torch.randperm(len(x), generator=g, device=x.device)[: self.max_points]]
        if len(x) < self.k:
            raise ValueError(f"k-means with {self.k} centres needs at least as many points, got {len(x)}")
        # k-means++: each next centre drawn with probability proportional to its squared distance to the nearest
        first = torch.randint(len(x), (1,), generator=g, device=x.device)
        self.centres = x[first]
        nearest = _sq_dists(x, self.centres).squeeze(1)
        chosen = [first]
        for _ in range(1, self.k):
            weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
            idx = torch.multinomial(weights, 1, generator=g)
            chosen.append(idx)
            nearest = torch.minimum(nearest, _sq_dists(x, x[idx]).squeeze(1))
        self.centres = x[torch.cat(chosen)].clone()
        for _ in range(self.n_iter):
            assign, _ = self._assign(x)
            sums = torch.zeros_like(self.centres).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=self.k).unsqueeze(1)
            # an empty cluster keeps its centre
            self.centres = torch.where(counts > 0, sums / counts.clamp(min=1), self.centres)

    def __call__(self, activations: Float[Tensor, "B D"]) -> Float[Tensor, "B K"]:
        return -_sq_dists(activations.float(), self.centres).sqrt_()


class PCA(_Base):
    """The top-K principal directions of the training activations; score = centred projection."""

    name = "pca"
    _state = ("mean", "components")

    def train(self, activations: Float[Tensor, "N D"]) -> None:
        x = activations.float()
        if self.k > min(x.shape):
            raise ValueError(f"PCA has at most min(N, D) = {min(x.shape)} components, asked for {self.k}")
        self.mean = x.mean(0)
        cov = torch.cov((x - self.mean).T.double())
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        self.components = vecs.flip(1)[:, : self.k].T.float().contiguous()

    def __call__(self, activations: Float[Tensor, "B D"]) -> Float[Tensor, "B K"]:
        return (activations.float() - self.mean) @ self.components.T


class SparseAutoencoder(_Base):
    """A ReLU sparse autoencoder trained on the activations (MSE + `l1` * L1 of the codes); score = its codes.

    Decoder columns are kept at unit norm so the L1 penalty cannot be dodged by shrinking codes.
    """

    name = "sae"
    _state = ("mean", "w_enc", "b_enc", "w_dec", "b_dec")

    def __init__(self, n_prototypes: int, seed: int = 0, l1: float = 1e-3, lr: float = 1e-3, steps: int = 2000,
                 batch: int = 1024):
        super().__init__(n_prototypes, seed)
        self.l1, self.lr, self.steps, self.batch = l1, lr, steps, batch

    def init(self, mean: Float[Tensor, " D"], generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh parameters around the activations' `mean` (seeded; encoder = decoder transposed, unit decoder
        rows); returns them, ready for an optimiser."""
        d, dev = mean.shape[0], mean.device
        self.mean = mean.float()
        w_dec = torch.randn(self.k, d, generator=generator or self._generator(dev), device=dev)
        self.w_dec = (w_dec / w_dec.norm(dim=1, keepdim=True)).requires_grad_()
        self.w_enc = self.w_dec.detach().T.clone().requires_grad_()
        self.b_enc = torch.zeros(self.k, device=dev, requires_grad=True)
        self.b_dec = torch.zeros(d, device=dev, requires_grad=True)
        return [self.w_enc, self.b_enc, self.w_dec, self.b_dec]

    def losses(self, batch: Float[Tensor, "B D"]) -> tuple[Tensor, Tensor, Float[Tensor, "B K"]]:
        """(squared reconstruction error, L1 of the codes), each a per-patch mean, and the codes."""
        x = batch.float() - self.mean
        codes = torch.relu(x @ self.w_enc + self.b_enc)
        recon = codes @ self.w_dec + self.b_dec
        return (recon - x).square().sum(1).mean(), codes.abs().sum(1).mean(), codes

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.w_dec /= self.w_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)

    def detach(self) -> None:
        for name in self._state:
            setattr(self, name, getattr(self, name).detach())

    def train(self, activations: Float[Tensor, "N D"]) -> None:
        g = self._generator(activations.device)
        x = activations.float()
        opt = torch.optim.Adam(self.init(x.mean(0), g), lr=self.lr)
        for _ in range(self.steps):
            batch = x[torch.randint(len(x), (min(self.batch, len(x)),), generator=g, device=x.device)]
            mse, l1, _ = self.losses(batch)
            opt.zero_grad(set_to_none=True)
            (mse + self.l1 * l1).backward()
            opt.step()
            self.normalise_decoder()
        self.detach()

    def __call__(self, activations: Float[Tensor, "B D"]) -> Float[Tensor, "B K"]:
        return torch.relu((activations.float() - self.mean) @ self.w_enc + self.b_enc)


SCORERS: dict[str, type[_Base]] = {s.name: s for s in (RandomVectors, KMeans, PCA, SparseAutoencoder)}


def make(name: str, n_prototypes: int, seed: int = 0, **options: Any) -> Scorer:
    """A fresh scorer of kind `name` (`random`, `kmeans`, `pca`, `sae`); `options` go to its constructor."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid: {', '.join(SCORERS)}")
    return SCORERS[name](n_prototypes, seed, **options)


def save(scorer: Scorer, path: Path) -> None:
    """Write the scorer's kind, size and learned tensors atomically to `path`."""
    import io

    buf = io.BytesIO()
    torch.save({"name": scorer.name, "n_prototypes": scorer.n_prototypes, "state": scorer.state_dict()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> Scorer:
    """A trained scorer saved by `save` (ready to score; its training options are not needed any more)."""
    saved = load_tensors(path)
    scorer = make(saved["name"], saved["n_prototypes"])
    scorer.load_state_dict(saved["state"])
    return scorer.to(device)
