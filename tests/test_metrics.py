"""Metrics (docs/method.md, "Metrics") against loop implementations written from its text, on
seeded random data and on hand-made cases with ties."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from swclip_core.metrics import (
    ACC_RADII_M,
    city_align,
    error_summary,
    geo_align,
    geolocation_errors,
    recall_at_k,
    region_fairness,
    ssi,
)

from .reference import ref_haversine


def ref_cosine(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(
        sum(a * a for a in u) * sum(b * b for b in v)
    )


def ref_emb_neighbours(emb, i, k):
    others = [j for j in range(len(emb)) if j != i]
    return sorted(others, key=lambda j: (-ref_cosine(emb[i], emb[j]), j))[:k]


def ref_percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default definition)."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def ref_average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def ref_pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    n = 40
    lat = 54.1 + rng.normal(0, 0.05, n)
    lon = -4.6 + rng.normal(0, 0.08, n)
    # Embeddings loosely follow position, so the metrics land strictly between 0 and 1.
    emb = np.c_[lat * 20, lon * 20, rng.normal(size=(n, 6))]
    emb -= emb.mean(axis=0)
    return {"lat": lat, "lon": lon, "emb": emb, "rng": rng, "n": n}


# ---- errors ----


def test_geolocation_errors_match_reference(data):
    rng = data["rng"]
    plat = data["lat"] + rng.normal(0, 0.01, data["n"])
    plon = data["lon"] + rng.normal(0, 0.01, data["n"])
    got = geolocation_errors(plat, plon, data["lat"], data["lon"])
    for i in range(data["n"]):
        ref = ref_haversine(plat[i], plon[i], data["lat"][i], data["lon"][i])
        assert got[i] == pytest.approx(ref, abs=1e-6)
    torch_got = geolocation_errors(torch.tensor(plat), plon, torch.tensor(data["lat"]), data["lon"])
    assert isinstance(torch_got, np.ndarray)
    np.testing.assert_allclose(torch_got, got, atol=1e-6)


def test_error_summary_matches_reference():
    errors = [*np.random.default_rng(1).lognormal(8, 2.5, 301), 25.0, 1_000.0]
    got = error_summary(errors)
    srt = sorted(errors)
    assert got["n"] == len(errors)
    assert got["median_error_m"] == pytest.approx(srt[len(srt) // 2])  # odd count
    assert got["mean_error_m"] == pytest.approx(sum(errors) / len(errors))
    assert got["p90_error_m"] == pytest.approx(ref_percentile(errors, 90))
    names = ["25m", "100m", "1km", "25km", "200km", "750km", "2500km"]
    for name, radius in zip(names, ACC_RADII_M, strict=True):
        assert got[f"acc_{name}"] == pytest.approx(sum(e <= radius for e in errors) / len(errors))
    assert set(got) == {
        "median_error_m",
        "mean_error_m",
        "p90_error_m",
        *(f"acc_{n}" for n in names),
        "n",
    }


def test_error_summary_empty_and_non_finite():
    empty = error_summary([])
    assert empty["n"] == 0 and math.isnan(empty["median_error_m"]) and math.isnan(empty["acc_1km"])
    with pytest.raises(ValueError, match="NaN"):
        error_summary([1.0, math.nan])


# ---- retrieval ----


def test_recall_at_k_matches_reference_with_ties():
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 5, size=(30, 20)).astype(float)  # many ties
    gt = rng.integers(0, 20, 30)
    got = recall_at_k(sim, gt, ks=(1, 3, 5, 20))
    for k in (1, 3, 5, 20):
        hits = 0
        for q in range(30):
            rank = sum(1 for g in range(20) if sim[q, g] > sim[q, gt[q]])
            hits += rank < k
        assert got[k] == pytest.approx(hits / 30)
    assert got[20] == 1.0
    assert recall_at_k(torch.tensor(sim), torch.tensor(gt), ks=(1,)) == {1: got[1]}


def test_geo_align_matches_reference_spearman(data):
    n = 12
    rng = data["rng"]
    lat, lon = data["lat"][:n], data["lon"][:n]
    dist = np.array(
        [[ref_haversine(lat[i], lon[i], lat[j], lon[j]) for j in range(n)] for i in range(n)]
    )
    sim = np.round(-dist / 5_000 + rng.normal(0, 0.5, (n, n)), 1)  # rounded: ties in sim
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    x = ref_average_ranks([sim[i, j] for i, j in pairs])
    y = ref_average_ranks([-dist[i, j] for i, j in pairs])
    ref = ref_pearson(x, y)
    got = geo_align(sim, dist)
    assert got == pytest.approx(ref, abs=1e-12)
    assert 0 < got < 1
    assert got == pytest.approx(spearmanr([sim[p] for p in pairs], [-dist[p] for p in pairs])[0])
    # The diagonal is ignored: changing it changes nothing.
    sim2 = sim.copy()
    np.fill_diagonal(sim2, 1e9)
    assert geo_align(sim2, dist) == pytest.approx(got, abs=1e-12)


def test_geo_align_perfect_and_constant():
    dist = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=float)
    assert geo_align(-dist, dist) == pytest.approx(1.0)
    assert geo_align(dist, dist) == pytest.approx(-1.0)
    assert math.isnan(geo_align(np.ones((3, 3)), dist))


# ---- neighbourhood metrics ----


def ref_ssi(emb, lat, lon, k):
    n = len(emb)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        geo = sorted(others, key=lambda j: (ref_haversine(lat[i], lon[i], lat[j], lon[j]), j))[:k]
        total += len(set(geo) & set(ref_emb_neighbours(emb, i, k))) / k
    return total / n


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ssi_matches_reference(data, k):
    got = ssi(data["emb"], data["lat"], data["lon"], k=k)
    ref = ref_ssi(data["emb"], data["lat"], data["lon"], k)
    assert got == pytest.approx(ref, abs=1e-12)
    assert 0 < got < 1


def test_ssi_ties_are_broken_by_lower_index():
    # One-hot embeddings give exact cosine ties (0 or 1); duplicated points give distance ties.
    emb = np.eye(3)[[0, 1, 0, 2, 1, 0]]
    lat = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    lon = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    for k in (1, 2, 3):
        assert ssi(emb, lat, lon, k=k) == pytest.approx(ref_ssi(emb, lat, lon, k), abs=1e-12)
    # Spelled out for k=1: emb neighbours (lowest index among best) = [2, 4, 0, 0, 1, 0],
    # geo neighbours = [1, 0, 4, 0, 2, 0]; they agree for samples 3 and 5 only.
    assert ssi(emb, lat, lon, k=1) == pytest.approx(2 / 6)


def test_ssi_perfect_when_embedding_is_position(data):
    # Cosine order of unit position vectors is great-circle order: SSI must be exactly 1.
    xyz = np.c_[
        np.cos(np.radians(data["lat"])) * np.cos(np.radians(data["lon"])),
        np.cos(np.radians(data["lat"])) * np.sin(np.radians(data["lon"])),
        np.sin(np.radians(data["lat"])),
    ]
    assert ssi(xyz, data["lat"], data["lon"], k=5) == pytest.approx(1.0)


def test_ssi_rejects_k_too_large(data):
    with pytest.raises(ValueError, match="k"):
        ssi(data["emb"][:5], data["lat"][:5], data["lon"][:5], k=5)


def ref_city_align(emb, city, k):
    def unknown(c):
        return c is None or (isinstance(c, float) and math.isnan(c)) or c == "" or c == -1

    shares = []
    for i in range(len(emb)):
        if unknown(city[i]):
            continue
        nn = ref_emb_neighbours(emb, i, k)
        shares.append(sum(1 for j in nn if not unknown(city[j]) and city[j] == city[i]) / k)
    return sum(shares) / len(shares)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_city_align_matches_reference_with_unknown_labels(data, k):
    rng = data["rng"]
    pool = ["Douglas", "Ramsey", "Peel", None, math.nan, ""]
    city = [pool[i] for i in rng.integers(0, len(pool), data["n"])]
    got = city_align(data["emb"], city, k=k)
    assert got == pytest.approx(ref_city_align(data["emb"], city, k), abs=1e-12)
    codes = [
        -1 if c in (None, "") or c != c else ["Douglas", "Ramsey", "Peel"].index(c) for c in city
    ]
    assert city_align(torch.tensor(data["emb"]), np.array(codes), k=k) == pytest.approx(got)


def test_city_align_hand_made_case():
    emb = np.eye(3)[[0, 0, 0, 1, 1]]
    city = ["A", "A", "B", "  ", "C"]
    # k=2: sample 0 -> [1, 2] (1 same) 1/2; 1 -> [0, 2] 1/2; 2 -> [0, 1] 0; 3 unknown;
    # 4 -> [3, 0] 0.
    assert city_align(emb, city, k=2) == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    assert math.isnan(city_align(emb, [None] * 5, k=2))


# ---- fairness ----


def test_region_fairness_matches_reference():
    rng = np.random.default_rng(5)
    n = 60
    region = [["Douglas", "Ramsey", "Peel", None, -1][i] for i in rng.integers(0, 5, n)]
    errors = rng.lognormal(6, 1.5, n)
    hits = rng.random(n) < 0.4
    table, disparity = region_fairness(region, errors, radius_m=500.0, hit_at_1=hits)
    assert list(table["region"]) == ["Douglas", "Peel", "Ramsey"]
    assert list(table.columns) == [
        "region",
        "n",
        "median_error_m",
        "mean_error_m",
        "acc_at_radius",
        "r_at_1",
    ]
    medians, means = [], []
    for _, row in table.iterrows():
        idx = [i for i in range(n) if region[i] == row["region"]]
        e = sorted(errors[i] for i in idx)
        m = len(e)
        median = e[m // 2] if m % 2 else (e[m // 2 - 1] + e[m // 2]) / 2
        assert row["n"] == m
        assert row["median_error_m"] == pytest.approx(median)
        assert row["mean_error_m"] == pytest.approx(sum(e) / m)
        assert row["acc_at_radius"] == pytest.approx(sum(x <= 500 for x in e) / m)
        assert row["r_at_1"] == pytest.approx(sum(hits[i] for i in idx) / m)
        medians.append(median)
        means.append(sum(e) / m)
    mu = sum(medians) / len(medians)
    cv = math.sqrt(sum((x - mu) ** 2 for x in medians) / len(medians)) / mu
    xbar = sum(means) / len(means)
    gini = sum(abs(a - b) for a in means for b in means) / (2 * len(means) ** 2 * xbar)
    assert disparity == pytest.approx(
        {
            "median_error_max_min_ratio": max(medians) / min(medians),
            "median_error_cv": cv,
            "mean_error_gini": gini,
        }
    )


def test_region_fairness_edge_cases():
    table, disparity = region_fairness([1, 1, 2], [10.0, 30.0, 0.0])
    assert list(table["region"]) == [1, 2]
    assert table["r_at_1"].isna().all()
    assert disparity["median_error_max_min_ratio"] == math.inf
    single, d1 = region_fairness(["A", "A"], [5.0, 7.0])
    assert len(single) == 1
    assert d1 == {"median_error_max_min_ratio": 1.0, "median_error_cv": 0.0, "mean_error_gini": 0.0}
    empty, d0 = region_fairness([None, -1, ""], [1.0, 2.0, 3.0])
    assert isinstance(empty, pd.DataFrame) and empty.empty
    assert all(math.isnan(v) for v in d0.values())
    with pytest.raises(ValueError, match="errors"):
        region_fairness(["A"], [1.0, 2.0])


def test_gini_of_one_region_holding_all_error():
    # Two regions, mean errors 0 and x: G = (|0−x| + |x−0|) / (2·2²·x/2) = 1/2 (population Gini).
    _, disparity = region_fairness(["A", "B"], [0.0, 100.0])
    assert disparity["mean_error_gini"] == pytest.approx(0.5)


def test_row_chunking_does_not_change_results(data, monkeypatch):
    city = [["Douglas", "Ramsey", None][i % 3] for i in range(data["n"])]
    whole = (ssi(data["emb"], data["lat"], data["lon"], k=5), city_align(data["emb"], city, k=5))
    monkeypatch.setattr("swclip_core.metrics._ROW_CHUNK", 7)  # 40 rows: 6 chunks, a short last one
    chunked = (ssi(data["emb"], data["lat"], data["lon"], k=5), city_align(data["emb"], city, k=5))
    assert chunked == whole


def test_ssi_and_city_align_on_a_seeded_query_sample(data):
    # Above `queries` samples the mean is over a seeded sample of them, neighbours among all.
    city = [["Douglas", "Ramsey"][i % 2] for i in range(data["n"])]
    rows = np.sort(np.random.default_rng(3).choice(data["n"], 12, replace=False))
    emb, lat, lon = data["emb"], data["lat"], data["lon"]
    expected_ssi = np.mean(
        [
            len(
                set(ref_emb_neighbours(emb, i, 5))
                & set(
                    sorted(
                        (j for j in range(data["n"]) if j != i),
                        key=lambda j: (ref_haversine(lat[i], lon[i], lat[j], lon[j]), j),
                    )[:5]
                )
            )
            / 5
            for i in rows
        ]
    )
    assert ssi(emb, lat, lon, k=5, queries=12, seed=3) == pytest.approx(expected_ssi, abs=1e-12)
    expected_city = np.mean(
        [np.mean([city[j] == city[i] for j in ref_emb_neighbours(emb, i, 5)]) for i in rows]
    )
    got = city_align(emb, city, k=5, queries=12, seed=3)
    assert got == pytest.approx(expected_city, abs=1e-12)
    assert ssi(emb, lat, lon, k=5, queries=12, seed=4) != ssi(emb, lat, lon, k=5, queries=12)
