"""The AP engine equals scikit-learn's average_precision_score, ties and traits without positives included."""

import contextlib
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from nfjobs.scoring import ap as engine


def sklearn_ap(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(K, T) APs by the scikit-learn loop (0 where a trait has no positives, as sklearn returns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No positive class found in y_true"
        return np.array([[average_precision_score(labels[:, t], scores[:, k]) for t in range(labels.shape[1])]
                         for k in range(scores.shape[1])])


@st.composite
def problems(draw):
    n, k, t = draw(st.integers(1, 50)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.sampled_from([1, 2, 3, 10, 0]))  # 0: continuous scores, else that many distinct values
    scores = rng.normal(size=(n, k)) if levels == 0 else rng.integers(0, levels, (n, k)).astype(float)
    labels = rng.random((n, t)) < rng.random(t)
    if draw(st.booleans()):
        labels[:, 0] = False  # a trait without positives
    return scores, labels


@pytest.mark.parametrize("path", ["numba", "numba-float32", "torch", "dense", "sparse"])
@settings(max_examples=60, deadline=None)
@given(problem=problems(), chunk=st.sampled_from([1, 64, 1 << 20]))
def test_matches_sklearn(problem, chunk, path):
    scores, labels = problem
    if path == "numba-float32":  # float32 scores take the packed-key sort
        scores = scores.astype(np.float32)
    force = mock.patch.object(engine, "_sparse_is_cheaper", lambda n_pos, n: path == "sparse")
    backend = "numba" if path.startswith("numba") else "torch"
    with force if path in ("dense", "sparse") else contextlib.nullcontext():
        ap, n_pos = engine.average_precision(torch.from_numpy(scores), torch.from_numpy(labels), chunk_elements=chunk,
                                             backend=backend)
    np.testing.assert_allclose(ap.numpy(), sklearn_ap(labels, scores), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(n_pos.numpy(), labels.sum(0))


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_paired_matches_sklearn(problem):
    scores, labels = problem
    t = min(scores.shape[1], labels.shape[1])
    got = engine.paired_average_precision(torch.from_numpy(scores[:, :t]), torch.from_numpy(labels[:, :t]))
    want = np.diag(sklearn_ap(labels[:, :t], scores[:, :t]))
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-9)


def test_float32_scores_and_bool_labels():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 20, generator=g).round(decimals=1)  # float32 with many ties
    labels = torch.rand(300, 7, generator=g) < 0.2
    ap, _ = engine.average_precision(scores, labels)
    np.testing.assert_allclose(ap.numpy(), sklearn_ap(labels.numpy(), scores.numpy()), rtol=0, atol=1e-9)


def test_best_prototypes_picks_highest_ap_and_reports_empty_traits():
    labels = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    scores = torch.tensor([[0.0, 4.0, 4.0], [0.0, 3.0, 3.0], [1.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    best = engine.best_prototypes(scores, labels)
    assert best.index.tolist() == [1, 0]  # prototypes 1 and 2 tie at AP 1: the lower index wins
    assert best.ap.tolist() == [1.0, 0.0]
    assert best.n_pos.tolist() == [2, 0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 50, (2000, 64), generator=g).float()
    labels = torch.rand(2000, 31, generator=g) < torch.rand(31, generator=g) ** 3
    cpu, _ = engine.average_precision(scores, labels)
    gpu, _ = engine.average_precision(scores.cuda(), labels.cuda(), chunk_elements=1 << 16)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-12)
