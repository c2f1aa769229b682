"""results.md and its plots, written from the measured records only."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

from .accuracy import FIGURES


def fmt(value: float, sd: float | None, metres: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:,.0f}" if metres else f"{value:.3f}"
    if sd is not None and not math.isnan(sd) and sd > 0:
        text += f" ± {sd:,.0f}" if metres else f" ± {sd:.3f}"
    return text


def table1(summary: pd.DataFrame, dataset: str, split: str, protocol: str) -> list[str]:
    rows = summary[
        (summary.dataset == dataset) & (summary.split == split) & (summary.protocol == protocol)
    ]
    header = (
        "| objective | median error (m) | mean error (m) | R@1 | Geo-Align | SSI | City-Align |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows.itertuples():
        cells = [fmt(getattr(row, f), getattr(row, f + "_sd"), f.endswith("_m")) for f in FIGURES]
        lines.append(f"| {row.objective} | " + " | ".join(cells) + " |")
    return lines


def plot_errors(summary: pd.DataFrame, dataset: str, path: Path) -> Path:
    """Median error per objective, one panel per split × protocol, log scale, sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt

    panels = [(s, p) for s in ("random", "spatial") for p in ("closed", "open")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharey=True)
    for ax, (split, protocol) in zip(axes, panels, strict=True):
        rows = summary[
            (summary.dataset == dataset) & (summary.split == split) & (summary.protocol == protocol)
        ]
        ax.bar(
            rows.objective,
            rows.median_error_m,
            yerr=rows.median_error_m_sd.fillna(0),
            color="#4477aa",
            capsize=3,
        )
        ax.set_yscale("log")
        ax.set_title(f"{split} split, {protocol} set", fontsize=10)
        ax.tick_params(axis="x", rotation=45)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("median error (m, log)")
    fig.suptitle(f"{dataset}: median geolocation error (mean ± sd over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def verdicts(summary: pd.DataFrame) -> list[str]:
    """Plain statements computed from the table: is SW-CLIP ahead of CLIP, and of the best peer?"""
    lines = []
    for (dataset, split, protocol), rows in summary.groupby(
        ["dataset", "split", "protocol"], sort=False
    ):
        by = rows.set_index("objective")
        if not {"swclip", "clip"} <= set(by.index):
            continue
        sw, clip = by.loc["swclip"], by.loc["clip"]
        best = by.median_error_m.idxmin()
        lines.append(
            f"- {dataset}, {split} split, {protocol} set: SW-CLIP median error "
            f"{sw.median_error_m:,.0f} m vs CLIP {clip.median_error_m:,.0f} m "
            f"({'lower' if sw.median_error_m < clip.median_error_m else 'NOT lower'}); "
            f"SSI {sw.ssi:.3f} vs {clip.ssi:.3f}; best median error: {best} "
            f"({by.median_error_m.min():,.0f} m)."
        )
    return lines


def methods_table(records: list[dict]) -> list[str]:
    """Median error (mean ± sd over seeds) of each prediction method, per data set, split and
    objective; open protocol."""
    frame = pd.DataFrame(records)
    methods = list(dict.fromkeys(frame["method"]))
    grouped = frame.groupby(["dataset", "split", "objective", "method"], sort=False)
    mean, sd = grouped["median_error_m"].mean(), grouped["median_error_m"].std(ddof=0)
    lines = [
        "| data set | split | objective | " + " | ".join(f"{m} (m)" for m in methods) + " |",
        "| --- | --- | --- |" + " ---: |" * len(methods),
    ]
    for key in dict.fromkeys(zip(frame.dataset, frame.split, frame.objective, strict=True)):
        cells = [fmt(mean[(*key, m)], sd[(*key, m)], True) for m in methods]
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    return lines
