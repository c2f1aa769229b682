"""Evaluation metrics (docs/method.md, "Metrics"): geolocation errors, R@K, Geo-Align, SSI,
City-Align and regional fairness.

Inputs are numpy arrays (torch tensors and pandas Series are converted); outputs are floats,
dicts and DataFrames. Neighbourhoods break ties by lower index first (stable sorts), so every figure
is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from swclip_core.geo import haversine_m

ACC_RADII_M = (25, 100, 1_000, 25_000, 200_000, 750_000, 2_500_000)

# SSI and City-Align average a per-sample overlap; above this many samples the average is taken
# over a seeded random sample of them (their neighbours are still searched among all N), so the
# cost grows as N, not N^2, and the estimate's standard error stays below about 0.01.
NEIGHBOUR_QUERIES = 2_000
# Query rows of the (Q, N) similarity/distance blocks handled at once, to bound memory.
_ROW_CHUNK = 1024
_BLOCK_BYTES = 64 << 20


def _array(value: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _radius_key(radius_m: float) -> str:
    if radius_m >= 1_000:
        return f"acc_{radius_m / 1_000:g}km"
    return f"acc_{radius_m:g}m"


def geolocation_errors(pred_lat: Any, pred_lon: Any, true_lat: Any, true_lon: Any) -> np.ndarray:
    """Great-circle distance in metres between each prediction and its true location."""
    return haversine_m(_array(pred_lat), _array(pred_lon), _array(true_lat), _array(true_lon))


def error_summary(errors_m: Any) -> dict[str, float]:
    """Median, mean and 90th percentile (linear interpolation) of the errors in metres, and the
    fraction of errors within (≤) each radius of :data:`ACC_RADII_M` (keys ``acc_25m`` …
    ``acc_2500km``), plus ``n``. All figures are NaN for an empty input.
    """
    errors = _array(errors_m).reshape(-1)
    if not np.all(np.isfinite(errors)):
        raise ValueError(
            "Geolocation errors contain NaN/inf; drop records without a prediction first."
        )
    summary: dict[str, float] = {}
    if errors.size == 0:
        summary.update(median_error_m=math.nan, mean_error_m=math.nan, p90_error_m=math.nan)
        summary.update({_radius_key(r): math.nan for r in ACC_RADII_M})
    else:
        summary["median_error_m"] = float(np.median(errors))
        summary["mean_error_m"] = float(np.mean(errors))
        summary["p90_error_m"] = float(np.percentile(errors, 90))
        summary.update({_radius_key(r): float(np.mean(errors <= r)) for r in ACC_RADII_M})
    summary["n"] = int(errors.size)
    return summary


def recall_at_k(sim: Any, gt_index: Any, ks: Iterable[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@k for a (Q, G) similarity matrix and each query's true gallery index.

    rank = number of gallery entries strictly more similar than the true one; R@k = mean[rank < k].
    """
    s = _array(sim)
    gt = _array(gt_index, dtype=np.int64).reshape(-1)
    if s.ndim != 2 or s.shape[0] != gt.size:
        raise ValueError(f"sim must be (Q, G) with Q = {gt.size} queries, got shape {s.shape}.")
    true_sim = s[np.arange(gt.size), gt]
    rank = (s > true_sim[:, None]).sum(axis=1)
    return {int(k): float(np.mean(rank < k)) for k in ks}


def geo_align(sim: Any, dist_m: Any) -> float:
    """Spearman correlation (average ranks for ties) between ``sim_ij`` and ``−dist_ij`` over all
    pairs i ≠ j of a square cross-modal matrix (image i vs caption j). NaN if either is constant.
    """
    s = _array(sim)
    d = _array(dist_m)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape != d.shape:
        raise ValueError(f"sim and dist_m must be the same square shape, got {s.shape}, {d.shape}.")
    off = ~np.eye(s.shape[0], dtype=bool)
    rs = rankdata(s[off])
    rd = rankdata(-d[off])
    if rs.size < 2 or np.all(rs == rs[0]) or np.all(rd == rd[0]):
        return math.nan
    return float(np.corrcoef(rs, rd)[0, 1])


def _query_sample(n: int, size: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a seeded random ``size`` of them (sorted) when ``n`` is larger
    (``size`` None: :data:`NEIGHBOUR_QUERIES`)."""
    size = NEIGHBOUR_QUERIES if size is None else size
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _block_rows(n: int) -> int:
    """Query rows per block, so that a (rows, n) float64 block stays within _BLOCK_BYTES."""
    return max(1, min(_ROW_CHUNK, _BLOCK_BYTES // (8 * max(n, 1))))


def _smallest(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) indices of each row's k smallest scores, the row's own column ``rows[i]``
    excluded and ties broken by lower index (in no particular order: callers use them as sets).
    ``scores`` is overwritten."""
    scores[np.arange(rows.size), rows] = np.inf  # self goes last
    # A partition is O(n) per row where a full sort is O(n log n); the k-th smallest value then
    # splits each row into the ones certainly in and the ties, of which the lowest indices win.
    kth = np.partition(scores, k - 1, axis=1)[:, k - 1]
    out = np.empty((rows.size, k), dtype=np.int64)
    for r in range(rows.size):
        below = np.flatnonzero(scores[r] < kth[r])
        ties = np.flatnonzero(scores[r] == kth[r])
        out[r] = np.concatenate([below, ties[: k - below.size]])
    return out


def _cosine_neighbours(emb: np.ndarray, k: int, queries: np.ndarray) -> np.ndarray:
    """(Q, k) indices of each query row's k most cosine-similar other rows, ties by lower index."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms > 0, norms, 1.0)
    out = np.empty((queries.size, k), dtype=np.int64)
    step = _block_rows(emb.shape[0])
    for start in range(0, queries.size, step):
        rows = queries[start : start + step]
        out[start : start + rows.size] = _smallest(-(unit[rows] @ unit.T), rows, k)
    return out


def _geo_neighbours(lat: np.ndarray, lon: np.ndarray, k: int, queries: np.ndarray) -> np.ndarray:
    """(Q, k) indices of each query point's k nearest other points by haversine, ties by lower
    index."""
    out = np.empty((queries.size, k), dtype=np.int64)
    step = _block_rows(lat.size)
    for start in range(0, queries.size, step):
        rows = queries[start : start + step]
        d = haversine_m(lat[rows, None], lon[rows, None], lat[None, :], lon[None, :])
        out[start : start + rows.size] = _smallest(d, rows, k)
    return out


def _check_k(k: int, n: int, name: str) -> None:
    if not 1 <= k < n:
        raise ValueError(f"{name} needs 1 <= k < number of samples; got k={k} for {n} samples.")


def ssi(
    emb: Any,
    lat: Any,
    lon: Any,
    k: int = 10,
    *,
    queries: int | None = None,
    seed: int = 0,
) -> float:
    """Spatial Smoothness Index: mean over i of ``|N_k^geo(i) ∩ N_k^emb(i)| / k``.

    N^emb by cosine similarity (descending), N^geo by haversine (ascending), i excluded from its own
    neighbourhoods, ties by lower index first. 1 = embedding neighbours are the geographic ones.
    With more than ``queries`` samples (default :data:`NEIGHBOUR_QUERIES`) the mean is over a
    random ``queries`` of them drawn with ``seed`` (their neighbourhoods still among all samples):
    O(queries · N), not O(N²).
    """
    e = _array(emb)
    la = _array(lat).reshape(-1)
    lo = _array(lon).reshape(-1)
    if e.ndim != 2 or not e.shape[0] == la.size == lo.size:
        raise ValueError(f"emb must be (N, D) with N = {la.size}, got shape {e.shape}.")
    _check_k(k, la.size, "ssi")
    rows = _query_sample(la.size, queries, seed)
    emb_nn = _cosine_neighbours(e, k, rows)
    geo_nn = _geo_neighbours(la, lo, k, rows)
    overlap = [np.intersect1d(a, b).size for a, b in zip(emb_nn, geo_nn, strict=True)]
    return float(np.mean(overlap) / k)


def _is_unknown(label: Any) -> bool:
    if label is None or label is pd.NA:
        return True
    if isinstance(label, str):
        return not label.strip()
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        # Float -1.0 too: an integer code column with gaps is read as float.
        return bool(math.isnan(label) or label == -1)
    return False


def _label_codes(labels: Any) -> tuple[np.ndarray, list[Any]]:
    """Integer codes (−1 for unknown) and the known labels, sorted where the labels allow it."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray):
        labels = labels.reshape(-1)
    # Through a Series, not np.asarray: that would turn ["A", -1] into the strings "A", "-1".
    values = pd.Series(labels).to_numpy(dtype=object)
    known = np.array([not _is_unknown(v) for v in values], dtype=bool)
    codes = np.full(values.size, -1, dtype=np.int64)
    if not known.any():
        return codes, []
    known_values = pd.Series(list(values[known]), dtype=object)
    try:
        known_codes, uniques = pd.factorize(known_values, sort=True)
    except TypeError:  # mixed label types cannot be sorted: keep order of first appearance
        known_codes, uniques = pd.factorize(known_values, sort=False)
    codes[known] = known_codes
    return codes, list(uniques)


def city_align(
    emb: Any, city: Any, k: int = 10, *, queries: int | None = None, seed: int = 0
) -> float:
    """Mean, over samples with a known city, of the share of their k nearest embedding neighbours
    (cosine, self excluded, ties by lower index) in the same city.

    Unknown cities (None, NaN, blank, −1) are never queries and never count as the same city, but
    those samples still occupy neighbour slots. NaN when no sample has a known city. With more
    than ``queries`` samples of a known city the mean is over a random ``queries`` of them drawn
    with ``seed``, as in :func:`ssi`.
    """
    e = _array(emb)
    codes, _ = _label_codes(city)
    if e.ndim != 2 or e.shape[0] != codes.size:
        raise ValueError(f"emb must be (N, D) with N = {codes.size}, got shape {e.shape}.")
    _check_k(k, codes.size, "city_align")
    known = np.flatnonzero(codes != -1)
    if known.size == 0:
        return math.nan
    rows = known[_query_sample(known.size, queries, seed)]
    nn = _cosine_neighbours(e, k, rows)
    same = codes[nn] == codes[rows, None]
    return float(same.mean())


def _gini(values: np.ndarray) -> float:
    mean = values.mean()
    if mean == 0:
        return math.nan
    # Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − n − 1) x_(i) over the sorted x_(1) ≤ … ≤ x_(n): O(n log n).
    n = values.size
    weights = 2 * np.arange(1, n + 1) - n - 1
    return float((weights * np.sort(values)).sum() / (n**2 * mean))


def _max_min_ratio(values: np.ndarray) -> float:
    low, high = float(values.min()), float(values.max())
    if low == 0:
        return math.inf if high > 0 else math.nan
    return high / low


def region_fairness(
    region: Any,
    errors_m: Any,
    *,
    radius_m: float = 1_000.0,
    hit_at_1: Sequence[bool] | np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-region figures and their disparity.

    Returns a DataFrame with one row per known region (unknown: None, NaN, blank, −1 are skipped)
    and columns ``region, n, median_error_m, mean_error_m, acc_at_radius`` (share of errors ≤
    ``radius_m``) and ``r_at_1`` (mean of ``hit_at_1``, a per-sample top-1 hit flag; NaN when not
    given), and a dict:

    - ``median_error_max_min_ratio``: largest / smallest regional median error (inf when the
      smallest is 0);
    - ``median_error_cv``: population standard deviation / mean of the regional median errors;
    - ``mean_error_gini``: Gini coefficient of the regional mean errors x_1..x_n,
      ``G = Σ_i Σ_j |x_i − x_j| / (2 n² x̄)`` (0 = all regions equal, → 1 = one region has all
      the error).

    The figures are NaN when no region is known; with one region they are 1, 0 and 0.
    """
    codes, labels = _label_codes(region)
    errors = _array(errors_m).reshape(-1)
    if errors.size != codes.size:
        raise ValueError(f"Got {codes.size} region labels but {errors.size} errors.")
    hits = None if hit_at_1 is None else _array(hit_at_1).reshape(-1)
    if hits is not None and hits.size != codes.size:
        raise ValueError(f"Got {codes.size} region labels but {hits.size} hit_at_1 flags.")
    rows = []
    for code, label in enumerate(labels):
        members = codes == code
        e = errors[members]
        rows.append(
            {
                "region": label,
                "n": int(members.sum()),
                "median_error_m": float(np.median(e)),
                "mean_error_m": float(np.mean(e)),
                "acc_at_radius": float(np.mean(e <= radius_m)),
                "r_at_1": math.nan if hits is None else float(np.mean(hits[members])),
            }
        )
    columns = ["region", "n", "median_error_m", "mean_error_m", "acc_at_radius", "r_at_1"]
    # typed even without a row: an empty frame's columns would be object, and the choropleth's
    # reindexed counts with them (pandas deprecates filling those)
    dtypes = {"n": int} | {column: float for column in columns[2:]}
    table = pd.DataFrame(rows, columns=columns).astype(dtypes)
    if table.empty:
        nan = math.nan
        return table, {
            "median_error_max_min_ratio": nan,
            "median_error_cv": nan,
            "mean_error_gini": nan,
        }
    medians = table["median_error_m"].to_numpy()
    means = table["mean_error_m"].to_numpy()
    cv = float(medians.std() / medians.mean()) if medians.mean() > 0 else math.nan
    disparity = {
        "median_error_max_min_ratio": _max_min_ratio(medians),
        "median_error_cv": cv,
        "mean_error_gini": _gini(means),
    }
    return table, disparity
