"""Sensitivity of SW-CLIP's settings: the evidence behind the defaults of `swclip train`.

One setting changes at a time around the first release's settings (``CENTRE``), on both
generated place lists (one with many addresses per street, one with one point per road), random
split, every seed, default prediction method; the current defaults, chosen from this table, are
a row of their own. Plain CLIP at the same budgets is the reference row. Runs are keyed by their
settings (accuracy.run_folder), so the "defaults" and "clip" rows reuse the main table's runs.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from swclip_core.config import SpatialKernel, TrainConfig

from . import accuracy
from .datasets import Dataset

LONG_EPOCHS = 30  # the demo's budget; the tables use each data set's shorter one
# The settings of the first release (0.1.0), chosen before any measurement: the sweep's centre.
CENTRE = TrainConfig(
    kernel=SpatialKernel(scale_m=250.0, cutoff_m=2_000.0, street_bonus=0.5, city_bonus=0.0),
    lambda_nc=0.5,
    lambda_fair=0.1,
)


def variants(defaults: TrainConfig) -> list[tuple[str, str, TrainConfig, bool]]:
    """(label, objective, settings, long training) for every row of the sweep."""
    base, kernel = CENTRE, CENTRE.kernel
    rows = [
        ("0.1.0 settings (centre)", "swclip", base, False),
        ("clip (reference)", "clip", defaults, False),
    ]
    for scale in (25.0, 50.0, 100.0, 250.0, 1000.0):
        if scale != kernel.scale_m:
            changed = replace(base, kernel=replace(kernel, scale_m=scale))
            rows.append((f"scale_m={scale:g}", "swclip", changed, False))
    for value in (0.0, 0.5, 1.0):
        if value != base.lambda_nc:
            rows.append((f"lambda_nc={value:g}", "swclip", replace(base, lambda_nc=value), False))
    for value in (0.0, 0.1, 0.5):
        if value != base.lambda_fair:
            changed = replace(base, lambda_fair=value)
            rows.append((f"lambda_fair={value:g}", "swclip", changed, False))
    rows.append((f"0.1.0 settings, {LONG_EPOCHS} epochs", "swclip", base, True))
    rows.append(("defaults (automatic scale, no cutoff)", "swclip", defaults, False))
    rows.append((f"defaults, {LONG_EPOCHS} epochs", "swclip", defaults, True))
    rows.append((f"clip (reference), {LONG_EPOCHS} epochs", "clip", defaults, True))
    return rows


def sweep(
    datasets: list[Dataset],
    work,
    defaults: TrainConfig,
    seeds: tuple[int, ...],
    only: list[str] | None = None,
) -> list[dict]:
    """One record per variant (those labelled ``only``, default all) × data set × seed ×
    protocol (random split)."""
    records = []
    for label, objective, config, long in variants(defaults):
        if only is not None and label not in only:
            continue
        for dataset in datasets:
            data = replace(dataset, epochs=LONG_EPOCHS) if long else dataset
            for record in accuracy.run_accuracy(
                [data], work, seeds=seeds, objectives=(objective,), splits=("random",), base=config
            ):
                records.append({**record, "variant": label})
    return records


def table(records: list[dict]) -> list[str]:
    """Markdown: median error (mean ± sd over seeds) per variant, data set and protocol."""
    frame = pd.DataFrame(records)
    datasets = list(dict.fromkeys(frame["dataset"]))
    grouped = frame.groupby(["variant", "dataset", "protocol"], sort=False)["median_error_m"]
    mean, sd = grouped.mean(), grouped.std(ddof=0)
    ssi = frame.groupby(["variant", "dataset"], sort=False)["ssi"].mean()
    header = "| variant | " + " | ".join(
        f"{d} {p} (m) | {d} SSI" if p == "open" else f"{d} {p} (m)"
        for d in datasets
        for p in accuracy.PROTOCOLS
    )
    lines = [header + " |", "| --- |" + " ---: |" * (len(datasets) * 3)]
    for variant in dict.fromkeys(frame["variant"]):
        cells = []
        for d in datasets:
            for p in accuracy.PROTOCOLS:
                cells.append(f"{mean[variant, d, p]:,.0f} ± {sd[variant, d, p]:,.0f}")
            cells.append(f"{ssi[variant, d]:.3f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines
