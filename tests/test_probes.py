"""Probes on features: small transformer, torch logistic regression (vs scikit-learn), distance-weighted k-NN."""

import numpy as np
import pytest
import torch

from nfjobs.probes.fit import fit
from nfjobs.probes.linear import knn, logistic_regression
from nfjobs.probes.transformer import SmallTransformer


def _blobs(n, d=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(42)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def test_transformer_shapes_and_learning():
    x, y = _blobs(96)
    tokens = x[:, None, :] + 0.1 * torch.randn(96, 5, 8)  # (N, L=5, d=8)
    m = SmallTransformer(d_in=8, n_tokens=5, n_classes=3, d_model=32)
    assert m(tokens[:2]).shape == (2, 3)
    res = fit(m, tokens[:64], y[:64], tokens[64:], y[64:], epochs=8, lr=3e-3, batch_size=16, weight_decay=0.0,
              seed=0, device=torch.device("cpu"))
    assert res.accuracy > 0.8 and res.train_s > 0


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(300, seed=1)
    xt, yt, xv, yv = x[:200], y[:200], x[200:], y[200:]
    ours = logistic_regression(xt, yt, xv, yv, n_classes=3, c=0.1)
    scaler = StandardScaler().fit(xt.numpy())
    ref = LogisticRegression(C=0.1, max_iter=500).fit(scaler.transform(xt.numpy()), yt.numpy())
    assert ours.accuracy == pytest.approx(ref.score(scaler.transform(xv.numpy()), yv.numpy()), abs=0.02)


def test_knn_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _blobs(300, seed=2)
    x = x + torch.randn_like(x) * 2
    ours = knn(x[:200], y[:200], x[200:], y[200:], n_classes=3, k=20, chunk=33)
    ref = KNeighborsClassifier(n_neighbors=20, weights="distance").fit(x[:200].numpy(), y[:200].numpy())
    assert ours.accuracy == pytest.approx(ref.score(x[200:].numpy(), y[200:].numpy()), abs=1e-9)
    assert np.isnan(ours.train_accuracy)
