"""The AP engine's CPU kernel, compiled with numba: one pass per prototype over its sorted images.

For each prototype: argsort the scores (descending), then walk the tie groups in order. Each image adds 1 to the
positive count of every trait it has (a sparse label list), and each positive of a trait adds
`count / rank` to that trait's sum, with `count` and `rank` read at the end of the image's tie group (exactly
scikit-learn's step-wise AP). The cost per prototype is a sort plus N + 2 * (labelled pairs), independent of
the number of traits, where the torch path costs N per trait: on CUB's 312 sparse traits that is ~20x less work.
Prototypes run in parallel over the CPU's threads.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _descending_order(row, packed_sort):  # pragma: no cover - compiled
    """argsort(-row). For float32 rows (`packed_sort`), by sorting (order-preserving integer key << 32 | index)
    pairs: no indirection in the sort, faster than np.argsort. Equal scores keep no particular order (ties are
    grouped later)."""
    if not packed_sort:
        return np.argsort(-row)
    n = row.shape[0]
    packed = np.empty(n, np.uint64)
    for i in range(n):
        bits = np.uint64(np.float32(-row[i]).view(np.uint32))
        key = bits ^ np.uint64(0xFFFFFFFF) if bits >> np.uint64(31) else bits | np.uint64(0x80000000)
        packed[i] = (key << np.uint64(32)) | np.uint64(i)
    packed.sort()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[i] = np.int64(packed[i] & np.uint64(0xFFFFFFFF))
    return order


@numba.njit(parallel=True, cache=True, nogil=True)
def ap_sums(scores_kn, pos_ptr, pos_traits, n_traits, packed_sort):  # pragma: no cover - compiled
    """sum over each trait's positives of cpos / R, for every prototype: (K, T) float64.

    scores_kn: (K, N) scores, one row per prototype; pos_ptr (N + 1,) / pos_traits: the traits of image i are
    pos_traits[pos_ptr[i]:pos_ptr[i + 1]] (CSR).
    """
    k_total, n = scores_kn.shape
    out = np.zeros((k_total, n_traits))
    for k in numba.prange(k_total):
        row = scores_kn[k]
        order = _descending_order(row, packed_sort)
        counts = np.zeros(n_traits)
        sums = out[k]
        i = 0
        while i < n:
            value = row[order[i]]
            j = i + 1
            while j < n and row[order[j]] == value:
                j += 1
            if j == i + 1:  # no tie (the common case): count and score in one pass
                img = order[i]
                inv_rank = 1.0 / j
                for q in range(pos_ptr[img], pos_ptr[img + 1]):
                    t = pos_traits[q]
                    counts[t] += 1.0
                    sums[t] += counts[t] * inv_rank
                i = j
                continue
            for p in range(i, j):
                img = order[p]
                for q in range(pos_ptr[img], pos_ptr[img + 1]):
                    counts[pos_traits[q]] += 1.0
            inv_rank = 1.0 / j
            for p in range(i, j):
                img = order[p]
                for q in range(pos_ptr[img], pos_ptr[img + 1]):
                    t = pos_traits[q]
                    sums[t] += counts[t] * inv_rank
            i = j
    return out


def average_precision_numba(scores_nk: np.ndarray, labels_nt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, T) AP and (T,) positives per trait; traits without positives get 0."""
    scores_kn = np.ascontiguousarray(scores_nk.T)
    labels_nt = np.asarray(labels_nt, dtype=bool)
    n_pos = labels_nt.sum(0)
    rows, traits = np.nonzero(labels_nt)  # row-major: grouped by image
    pos_ptr = np.zeros(labels_nt.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=labels_nt.shape[0]), out=pos_ptr[1:])
    packed_sort = scores_kn.dtype == np.float32  # exact keys only for float32
    sums = ap_sums(scores_kn, pos_ptr, traits.astype(np.int32), labels_nt.shape[1], packed_sort)
    return sums / np.maximum(n_pos, 1), n_pos
