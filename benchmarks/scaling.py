"""Predict on large layers: time and peak memory of `swclip predict` as the layer grows.

Each measured size is kept in the work folder, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from swclip_core.data import read_samples

from .datasets import SAMPLE_DATA

SIZES = (5_000, 50_000)
NOTE = (
    "`swclip predict` on a CSV of 5,000 and of 50,000 rows (the 41 bundled photos repeated, with "
    "their EXIF positions), each in its own process, timed (wall clock) and with its peak "
    "memory (resident set size); model: `swclip train` on the 41 photos, 2 epochs, default "
    "settings; gallery: its 41 training locations; default prediction (`mode`, top 5). Both "
    "sizes run with a warm feature cache (a first predict on the 41 photos fills it), so what is "
    "compared is everything a layer's size drives: reading and checking the rows, embedding, "
    "retrieval, the figures (SSI and City-Align on a seeded 2,000-photo sample), the "
    "GeoPackage. Targets: 10x the rows in at most 13x the time and 1.5x the peak "
    "memory."
)
TIME_LIMIT = 13.0  # at 10x the rows
MEMORY_LIMIT = 1.5


def swclip(*args: object) -> tuple[float, int]:
    """Run `swclip ARGS` in a fresh process; its wall time (s) and peak RSS (bytes)."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "swclip_core.cli", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 4):
        raise RuntimeError(f"swclip {args[0]} failed ({process.returncode}): {stderr[-2000:]}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports kilobytes


def layer(n: int, folder: Path) -> Path:
    """A CSV of ``n`` rows cycling through the bundled photos, with their EXIF positions."""
    photos = read_samples(SAMPLE_DATA / "photos")
    rows = photos.iloc[[i % len(photos) for i in range(n)]]
    table = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": rows["image_path"].to_numpy(),
            "lat": rows["lat"].to_numpy(),
            "lon": rows["lon"].to_numpy(),
        }
    )
    path = folder / f"layer-{n}.csv"
    table.to_csv(path, index=False)
    return path


def predict_scaling(work: Path, sizes: tuple[int, ...] = SIZES) -> dict:
    """Time and peak memory of predict at each size (resumed from ``work/scaling``)."""
    folder = work / "scaling"
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    model = folder / "model"
    if not (model / "checkpoint.pt").exists():
        swclip("train", SAMPLE_DATA / "photos", "--out", model, "--epochs", 2, "--cache-dir", cache)
        # fills the feature cache, so that every size below reads features alike
        swclip("predict", SAMPLE_DATA / "photos", "--model", model, "--out",
               folder / "warm.gpkg", "--cache-dir", cache)  # fmt: skip
    runs = {}
    for n in sizes:
        done = folder / f"predict-{n}.json"
        if not done.exists():
            seconds, peak = swclip(
                "predict", layer(n, folder), "--model", model, "--out", folder / f"pred-{n}.gpkg",
                "--cache-dir", cache,
            )  # fmt: skip
            done.write_text(json.dumps({"rows": n, "seconds": seconds, "peak_rss_bytes": peak}))
        runs[n] = json.loads(done.read_text())
    small, large = runs[min(sizes)], runs[max(sizes)]
    return {
        "runs": list(runs.values()),
        "time_ratio": large["seconds"] / small["seconds"],
        "memory_ratio": large["peak_rss_bytes"] / small["peak_rss_bytes"],
        "rows_ratio": max(sizes) / min(sizes),
    }


def summarise(result: dict) -> list[str]:
    """The markdown lines of results.md's section."""
    lines = ["| rows | time (s) | peak memory (MB) |", "|---:|---:|---:|"]
    for run in result["runs"]:
        lines.append(
            f"| {run['rows']:,} | {run['seconds']:.1f} | {run['peak_rss_bytes'] / 2**20:,.0f} |"
        )
    time_ok = "meets" if result["time_ratio"] <= TIME_LIMIT else "MISSES"
    memory_ok = "meets" if result["memory_ratio"] <= MEMORY_LIMIT else "MISSES"
    return [
        *lines,
        "",
        f"{result['rows_ratio']:.0f}x the rows: {result['time_ratio']:.2f}x the time ({time_ok} "
        f"the {TIME_LIMIT:g}x target), {result['memory_ratio']:.2f}x the peak memory ({memory_ok} "
        f"the {MEMORY_LIMIT:g}x target).",
    ]
