"""AP engine vs the scikit-learn loop: choose the best of K prototypes for each of T traits over N images.

The scikit-learn loop runs on a subset of prototypes (all traits) and is extrapolated to K x T calls; the engine
runs at full scale. Scores are continuous (image scores are maxima of projections); trait prevalences are
log-uniform in [0.0015, 0.9] (CUB-200-2011's are skewed the same way, mean about 0.1).

    uv run python -m bench.ap_bench                    # 8192 x 312 x 5994 on the CPU (numba and torch paths)
    uv run python -m bench.ap_bench --device cuda      # the same on a GPU
"""

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from nfjobs.scoring.ap import average_precision, best_prototypes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_problem(n: int, k: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous scores (N, K) and labels (N, T) with prevalences log-uniform in [0.0015, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, generator=g)
    prevalence = torch.exp(torch.empty(t).uniform_(np.log(0.0015), np.log(0.9), generator=g))
    return scores, torch.rand(n, t, generator=g) < prevalence


def sklearn_reference(scores: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, float]:
    """(K, T) APs by the scikit-learn loop, and its seconds per AP."""
    s_np, y_np = scores.numpy().astype(np.float64), labels.numpy()
    k, t = s_np.shape[1], y_np.shape[1]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # traits without positives
        ref = np.array([[average_precision_score(y_np[:, j], s_np[:, i]) for j in range(t)] for i in range(k)])
    return ref, (time.perf_counter() - start) / (k * t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=5994)
    parser.add_argument("--n-prototypes", type=int, default=8192)
    parser.add_argument("--n-traits", type=int, default=312)
    parser.add_argument("--sklearn-prototypes", type=int, default=4, help="prototypes the sklearn loop scores")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-elements", type=int, default=None, help="engine chunk bound (default per device)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    n, k, t = args.n_images, args.n_prototypes, args.n_traits

    scores, labels = synthetic_problem(n, k, t, args.seed)
    ks = args.sklearn_prototypes
    ref, per_call = sklearn_reference(scores[:, :ks], labels)
    sk_full = per_call * k * t

    exact, _ = average_precision(scores[:, :ks].to(device), labels.to(device))
    max_err = float(np.abs(exact.cpu().numpy() - ref).max())

    scores_d, labels_d = scores.to(device), labels.to(device)
    backends = ["numba", "torch"] if device.type == "cpu" else ["torch"]
    timings = {}
    for backend in backends:
        best_prototypes(scores_d[:, :64], labels_d, backend=backend)  # warm-up (compile / CUDA context)
        _sync(device)
        start = time.perf_counter()
        best = best_prototypes(scores_d, labels_d, args.chunk_elements, backend=backend)
        _sync(device)
        timings[backend] = time.perf_counter() - start
        if backend == backends[0]:
            first = best
        else:  # the backends agree on the selection
            assert torch.equal(first.index, best.index) and torch.allclose(first.ap, best.ap, rtol=0, atol=1e-12)

    print(f"# AP engine: best of {k} prototypes for {t} traits over {n} images "
          f"(mean prevalence {labels.float().mean():.3f}), device {device}, "
          f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")
    print(f"# engine vs sklearn on the {ks} x {t} subset: max |AP difference| = {max_err:.2e}; "
          f"mean best train AP {best.ap.mean():.4f}")
    print("| method | AP evaluations | seconds | seconds for all | vs sklearn |")
    print("|---|---|---|---|---|")
    print(f"| scikit-learn loop (measured on {ks} prototypes) | {ks * t:,} | {per_call * ks * t:.2f} | "
          f"{sk_full:,.0f} (extrapolated) | 1x |")
    for backend, seconds in timings.items():
        print(f"| nfjobs.scoring.ap.best_prototypes, {backend} | {k * t:,} | {seconds:.2f} | {seconds:.2f} | "
              f"{sk_full / seconds:,.0f}x |")

if __name__ == "__main__":
    main()
