"""No work that grows as N² in the code a layer's size drives: predict's reading,
figures and outputs are run at N and 4N rows, and the memory they touch must grow about 4x, not
16x. Memory touched is counted in fresh pages (minor page faults) in a separate process whose
allocator maps every large block afresh, so it adds up every temporary array, chunked or not,
the way a timer would, but deterministically."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow

PROBE = """
import resource, sys
import numpy as np, pandas as pd, torch
import swclip_core.metrics as metrics
from swclip_core.data import read_exif_gps, read_samples
from swclip_core.evaluation import location_scores, prediction_table
from swclip_core.outputs import write_predictions_gpkg
from swclip_core.retrieval import localize

photos, folder, n, queries = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if queries != "default":
    metrics.NEIGHBOUR_QUERIES = int(queries)
names = ["lund_01.jpg", "lund_10.jpg", "panoramax_e1.jpg"]
places = [read_exif_gps(f"{photos}/{name}") for name in names]

def predict_path(n):
    rng = np.random.default_rng(n)
    lat = 55.70 + rng.normal(0, 0.01, n)
    lon = 13.19 + rng.normal(0, 0.01, n)
    table = pd.DataFrame({"image": [f"{photos}/{names[i % 3]}" for i in range(n)], "lat": lat,
                          "lon": lon, "city": rng.choice(["A", "B", "C"], n)})
    table.to_csv(f"{folder}/in.csv", index=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    samples = read_samples(f"{folder}/in.csv")
    emb = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, 64))).float(), dim=-1)
    gallery = pd.DataFrame({"lat": lat[:64], "lon": lon[:64], "caption": ["c"] * 64})
    pred = localize(emb, emb[:64].clone(), gallery, k=5, temperature=0.05)
    errors, summary = location_scores(pred, samples, emb)
    table = prediction_table(samples, pred, errors, np.full(n, -1), gallery)
    write_predictions_gpkg(table, f"{folder}/out.gpkg", skipped=[])
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

predict_path(300)  # imports and first-call set-up out of the way
print(predict_path(n), predict_path(4 * n))
"""


def touched_growth(tmp_path, n: int, queries: str = "default") -> float:
    """Pages touched by the predict path at 4n rows / at n rows."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        # every block above 64 kB gets fresh pages (no reuse through glibc's free lists), and no
        # transparent huge pages (one fault would then map 2 MB)
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "NUMPY_MADVISE_HUGEPAGE": "0",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(PHOTOS), str(tmp_path), str(n), queries],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    small, large = map(int, result.stdout.split()[-2:])
    return large / small


def test_predict_path_grows_linearly(tmp_path):
    # 2,000 -> 8,000 rows; neighbour metrics on a 500-query sample so that N exceeds it.
    growth = touched_growth(tmp_path, 2_000, queries="500")
    assert growth < 7, f"4x the rows touched {growth:.1f}x the memory: something is O(N^2)"


def test_the_probe_catches_an_n_squared_step(tmp_path):
    # The same path with every sample a neighbour query: SSI and City-Align become all-pairs.
    growth = touched_growth(tmp_path, 2_000, queries=str(10**9))
    assert growth > 10, f"an all-pairs step grew only {growth:.1f}x: the probe cannot see it"
