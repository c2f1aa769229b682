"""Location encoders × losses on real imagery: which objective localizes best, and does the
spatial (sw) loss help every encoder? (docs/method.md, "Location encoders")

Every encoder is trained with both losses on the same splits, seeds and epochs as Table 1; the
fused rows mix an objective's retrieval with image-kNN, the share chosen by cross-validation on
the training data (what `swclip predict --fuse` does when no --knn-weight is given).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from swclip_core.config import TrainConfig
from swclip_core.objectives.registry import REGISTRY

from . import accuracy
from .datasets import Dataset

ENCODER_OBJECTIVES = tuple(name for name, listing in REGISTRY.items() if listing.encoder)
# Every SW-based objective and the peer it must beat, each fused with image-kNN.
FUSED_ROWS = tuple(
    f"{name}{accuracy.WITH_KNN}" for name in ("swclip", "swgeo", "hybrid", "geoclip")
)
OBJECTIVES = (*ENCODER_OBJECTIVES, "image-knn", *FUSED_ROWS)
COLUMNS = ("closed median (m)", "closed R@1", "open median (m)")


def run(
    datasets: list[Dataset],
    work: Path,
    seeds: tuple[int, ...],
    base: TrainConfig,
    objectives: tuple[str, ...] = OBJECTIVES,
):
    """Yield the records (accuracy.run_accuracy's) of ``objectives`` (rows of :data:`OBJECTIVES`)
    on ``datasets``."""
    yield from accuracy.run_accuracy(
        datasets, work, seeds=seeds, objectives=objectives, protocols=("closed", "open"), base=base
    )


def _cell(rows: pd.DataFrame, protocol: str, figure: str) -> tuple[float, float]:
    values = rows[rows.protocol == protocol][figure]
    if values.isna().all():
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=0))


def _fmt(value: float, sd: float, metres: bool) -> str:
    if math.isnan(value):
        return "–"
    if metres:
        return f"{value:,.0f} ± {sd:,.0f}"
    return f"{value:.3f} ± {sd:.3f}"


def table(records: list[dict], dataset: str, split: str) -> list[str]:
    """One row per objective: closed median error, closed R@1, open median error (mean ± sd
    over seeds)."""
    frame = pd.DataFrame(records)
    frame = frame[(frame.dataset == dataset) & (frame.split == split)]
    lines = ["| objective | encoder | loss | " + " | ".join(COLUMNS) + " | seeds |"]
    lines.append("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for objective in OBJECTIVES:
        rows = frame[frame.objective == objective]
        if rows.empty:
            continue
        listing = REGISTRY.get(objective.removesuffix(accuracy.WITH_KNN))
        encoder = listing.encoder if listing and listing.encoder else "–"
        loss = listing.loss if listing and listing.loss else "–"
        closed, r1, opened = (
            _cell(rows, "closed", "median_error_m"),
            _cell(rows, "closed", "r_at_1"),
            _cell(rows, "open", "median_error_m"),
        )
        lines.append(
            f"| {objective} | {encoder} | {loss} | {_fmt(*closed, True)} | {_fmt(*r1, False)} | "
            f"{_fmt(*opened, True)} | {rows.seed.nunique()} |"
        )
    return lines


def means(records: list[dict]) -> pd.DataFrame:
    """Mean median error per dataset, split, protocol and objective (over seeds)."""
    frame = pd.DataFrame(records)
    keys = ["dataset", "split", "protocol", "objective"]
    return frame.groupby(keys, sort=False)["median_error_m"].mean().reset_index()


def verdicts(records: list[dict]) -> list[str]:
    """The questions of the comparison, answered from the records."""
    table_ = means(records)
    sw = {n for n, listing in REGISTRY.items() if listing.loss == "sw"}
    lines = []
    for (dataset, split), rows in table_.groupby(["dataset", "split"], sort=False):
        closed = rows[rows.protocol == "closed"].set_index("objective").median_error_m.dropna()
        opened = rows[rows.protocol == "open"].set_index("objective").median_error_m.dropna()
        if closed.empty or opened.empty:
            continue
        best_closed = closed.idxmin()
        best_open = opened.idxmin()
        sw_open = [o for o in opened.index if o.removesuffix(accuracy.WITH_KNN) in sw]
        lines.append(
            f"- {dataset}, {split} split: lowest closed median error **{best_closed}** "
            f"({closed.min():,.0f} m; SW-based: {'yes' if best_closed in sw else 'NO'}); "
            f"lowest open **{best_open}** ({opened.min():,.0f} m; SW-based: "
            f"{'yes' if best_open.removesuffix(accuracy.WITH_KNN) in sw else 'NO'}); "
            f"best SW-based open {min(sw_open, key=opened.get)} "
            f"({opened[sw_open].min():,.0f} m)."
        )
        for protocol, found in (("closed", closed), ("open", opened)):
            contest = seed_by_seed(records, dataset, split, protocol, found, sw)
            if contest:
                lines.append(f"  {contest}")
        ratios = []
        for encoder in ("text", "gps", "hybrid"):
            pair = {
                listing.loss: name
                for name, listing in REGISTRY.items()
                if listing.encoder == encoder
            }
            if {"sw", "infonce"} <= set(pair) and {pair["sw"], pair["infonce"]} <= set(
                closed.index
            ):
                ratio = closed[pair["sw"]] / closed[pair["infonce"]]
                ratios.append(f"{encoder} {ratio:.2f}")
        if ratios:
            lines.append(
                f"  sw / infonce closed median error per encoder: {', '.join(ratios)} "
                "(below 1: the spatial loss helps)."
            )
    return lines


def seed_by_seed(
    records: list[dict],
    dataset: str,
    split: str,
    protocol: str,
    means_: pd.Series,
    sw: set[str],
) -> str:
    """When an objective that is not SW-based has the lowest mean median error, the best
    SW-based one against it seed by seed (each seed is one split, on which both were trained):
    whether the order holds on every seed or changes with it. Empty when an SW-based one wins."""
    is_sw = means_.index.str.removesuffix(accuracy.WITH_KNN).isin(sw)
    winner = means_.idxmin()
    if is_sw[means_.index.get_loc(winner)] or not is_sw.any():
        return ""
    best_sw = means_[is_sw].idxmin()
    frame = pd.DataFrame(records)
    frame = frame[(frame.dataset == dataset) & (frame.split == split)]
    per_seed = (
        frame[frame.protocol == protocol]
        .pivot_table(index="seed", columns="objective", values="median_error_m")[[best_sw, winner]]
        .dropna()
    )
    gaps = per_seed[best_sw] - per_seed[winner]
    wins = int((gaps < 0).sum())
    return (
        f"{protocol}: {best_sw} minus {winner} per seed "
        f"{', '.join(f'{gap:+,.0f} m' for gap in gaps)} ({best_sw} lower on {wins} of "
        f"{len(gaps)} seeds)."
    )


def overall(records: list[dict]) -> list[str]:
    """Across data sets and splits: each objective's median error relative to the best one of
    that data set and split (closed and open protocols), averaged; 1.00 = always the best."""
    table_ = means(records)
    lines = []
    for protocol in ("closed", "open"):
        rows = table_[table_.protocol == protocol].dropna(subset=["median_error_m"])
        if rows.empty:
            continue
        best = rows.groupby(["dataset", "split"]).median_error_m.transform("min")
        relative = (rows.median_error_m / best).groupby(rows.objective, sort=False).mean()
        cells = ", ".join(f"{name} {value:.2f}" for name, value in relative.sort_values().items())
        lines.append(f"- {protocol} protocol, error relative to the best per data set: {cells}.")
    return lines


def summarise(records: list[dict], datasets: list[str]) -> list[str]:
    """The results.md section: verdicts, then a table per data set and split."""
    lines = [*overall(records), *verdicts(records)]
    for dataset in datasets:
        for split in accuracy.SPLITS:
            found = table(records, dataset, split)
            if len(found) > 2:
                lines += ["", f"**{dataset}, {split} split**", "", *found]
    return lines
