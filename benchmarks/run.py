"""`make bench`: every figure of benchmarks/results.md (and results.json) in one command.

Sections: the Table-1 comparison of all objectives (closed/open protocols, random/spatial
splits, several seeds) on generated scenes at two place lists, on real Landsat patches and on the
real photos; speed against limits and peers; a small sensitivity sweep of SW-CLIP's settings.
Nothing here is asserted by a test; every record names its data, split, backbone, seed, machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from swclip_core.config import (
    AUTO_SCALE_RULE,
    DEFAULT_METHOD,
    METHODS,
    MODE_RADIUS_M,
    SpatialKernel,
    TrainConfig,
)
from swclip_core.device import resolve_device

from . import accuracy, datasets, encoders, report, scaling, speed, speed_report, sweep

HERE = Path(__file__).resolve().parent
SAMPLE = datasets.SAMPLE_DATA


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {resolve_device('auto')}"
    )


GENERATED = ("isle-of-man", "scotland-os-names")


def build_datasets(work: Path, quick: bool) -> list[datasets.Dataset]:
    n, epochs = (150, 3) if quick else (400, 12)
    generated = [
        datasets.generated_scenes(
            SAMPLE / "places" / "isleofman_addresses.csv",
            "isle-of-man",
            work,
            n=n,
            epochs=epochs,
            country="Isle of Man",
            min_per_street=3,
        ),
        # A place list the defaults were never tuned on (Stirling, Shetland, Orkney).
        datasets.generated_scenes(
            SAMPLE / "places" / "os_open_names_roads_places.csv",
            "scotland-os-names",
            work,
            n=n,
            epochs=epochs,
            country="Scotland",
        ),
    ]
    real = real_imagery(work, epochs)
    return [generated[0], real[-1]] if quick else generated + real


def real_imagery(work: Path, epochs: int) -> list[datasets.Dataset]:
    """The data sets of real images: two Landsat scenes and the bundled photos."""
    rasters = SAMPLE / "rasters"
    return [
        datasets.landsat_patches(rasters / "nc_landsat7_2000_multiband.tif", work, epochs=epochs),
        datasets.andros_patches(rasters / "andros_landsat7_rgb_300m.tif", epochs=epochs),
        datasets.photos(epochs=epochs * 2),
    ]


def describe_scale(scale_m: float | None) -> str:
    if scale_m is not None:
        return f"{scale_m:g} m"
    return f"automatic ({AUTO_SCALE_RULE}; per run in its config.json)"


def hyperparameters(config: TrainConfig) -> list[str]:
    k: SpatialKernel = config.kernel
    return [
        f"kernel {k.kernel}, scale {describe_scale(k.scale_m)}, cutoff "
        f"{'none' if k.cutoff_m is None else f'{k.cutoff_m:g} m'}, street bonus "
        f"{k.street_bonus:g}, city bonus {k.city_bonus:g}; λ_nc {config.lambda_nc:g} "
        f"(temperature {config.nc_temperature:g}), λ_fair {config.lambda_fair:g}; batch "
        f"{config.batch_size} with {config.neighbours_per_anchor} neighbours per anchor; AdamW lr "
        f"{config.lr:g} (heads {config.head_lr:g}), weight decay {config.weight_decay:g}, "
        f"{config.text_layers} top text layers trained; cached-feature mode; backbone "
        f"{config.backbone}; predictions: `{DEFAULT_METHOD}` of the top 5 (radius "
        f"{MODE_RADIUS_M:g} m)."
    ]


SETTINGS_HEADING = "## Settings"
VERDICTS_HEADING = "## Does SW-CLIP beat plain CLIP? (computed from the tables below)"
TABLE1_HEADING = "## Table 1 per data set"
METHODS_HEADING = "## Prediction methods (open set)"
SWEEP_HEADING = "## Sensitivity of SW-CLIP's settings"


def table1_lines(
    base: TrainConfig,
    summary,
    data: list[datasets.Dataset],
    plots: list[Path],
    method_records: list[dict],
    benched: Sequence[str] = (),
) -> list[str]:
    """results.md from "Settings" to "Prediction methods": the sections Table 1's runs make
    (``benched``: the names of every data set the bench has, when Table 1 may lack some)."""
    lines = [SETTINGS_HEADING, "", *hyperparameters(base), "", VERDICTS_HEADING, ""]
    lines += [*report.verdicts(summary), "", TABLE1_HEADING, *not_tabled(summary, benched)]
    for d, plot in zip(data, plots, strict=True):
        lines += ["", f"### {d.name}", "", f"![{d.name}](plots/{plot.name})"]
        for split in accuracy.SPLITS:
            for protocol in accuracy.PROTOCOLS:
                lines += ["", f"**{split} split, {protocol} set**", ""]
                lines += report.table1(summary, d.name, split, protocol)
    return [
        *lines,
        "",
        METHODS_HEADING,
        "",
        "How the top-K candidates (K = 5, the default) become one coordinate "
        "(swclip_core.retrieval): `mode` "
        f"averages the heaviest group of candidates within {MODE_RADIUS_M:g} m of one another, "
        '`weighted` all of them (docs/method.md, "Predictions"), `top1` takes the best. '
        "The tables above use "
        f"`{DEFAULT_METHOD}`, the default of `swclip predict`.",
        "",
        *report.methods_table(method_records),
    ]


def not_tabled(summary, benched: Sequence[str]) -> list[str]:
    """A paragraph naming the objectives and data sets (of ``benched``) that the bench has and
    Table 1's records do not (added after those were measured), or nothing."""
    tabled_rows, tabled_scenes = set(summary.objective), set(summary.dataset)
    rows = [o for o in accuracy.OBJECTIVES if o not in tabled_rows]
    scenes = [d for d in benched if d not in tabled_scenes]
    if not rows and not scenes:
        return []
    missing = " and ".join(
        part
        for part in (
            f"the objectives {', '.join(f'`{o}`' for o in rows)}" if rows else "",
            f"the data set{'s' * (len(scenes) > 1)} {', '.join(scenes)}" if scenes else "",
        )
        if part
    )
    return [
        "",
        f"These tables were measured before {missing} were added to the bench; the rows they "
        'have are unchanged since. "Location encoders × losses (real imagery)" at the end '
        "measures the new objectives on the real imagery (its +knn rows mix in image-kNN at a "
        'share chosen by cross-validation, where "fused" here keeps the fixed 0.5); a full '
        "`make bench` puts them in these tables too.",
    ]


def sweep_lines(records: list[dict], seeds: tuple[int, ...]) -> list[str]:
    """The sensitivity section of results.md."""
    return [
        f"{SWEEP_HEADING} (random split, median error mean ± sd over seeds {list(seeds)})",
        "",
        sweep.__doc__.split("\n\n")[1].replace("\n", " ").replace("``", "`"),
        "",
        *sweep.table(records),
    ]


SCALING_HEADING = "## Predict on large layers"


def scaling_section(work: Path) -> tuple[dict, list[str]]:
    """Run (or resume) the predict-scaling section; its record and results.md lines."""
    result = scaling.predict_scaling(work)
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%d")
    lines = [
        SCALING_HEADING,
        "",
        f"{scaling.NOTE} Measured {result['date']} on {result['machine']}.",
        "",
    ]
    lines += scaling.summarise(result)
    print("\n".join(lines[-1:]), flush=True)
    return result, lines


def replace_section(markdown: str, heading: str, lines: list[str]) -> str:
    """``markdown`` with the section under ``heading`` replaced by ``lines`` (appended if new)."""
    before, found, after = markdown.partition(heading + "\n")
    rest = after[after.find("\n## ") + 1 :] if found and "\n## " in after else ""
    return before.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n" + ("\n" + rest if rest else "")


def update_results(out: Path, key: str, result: object, heading: str, lines: list[str]) -> None:
    """Put one section's record under ``key`` of results.json and its lines under ``heading``
    of results.md, leaving the other sections as they are."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    payload = json.loads(results.read_text()) if results.exists() else {}
    payload[key] = result
    results.write_text(json.dumps(payload, indent=1) + "\n")
    markdown = out / "results.md"
    text = markdown.read_text() if markdown.exists() else "# SW-CLIP benchmarks\n"
    markdown.write_text(replace_section(text, heading, lines))
    print(f"updated {markdown} and {results}")


def only_scaling(out: Path, work: Path) -> None:
    """`--section predict-scaling`: measure that section alone and update the results in place."""
    result, lines = scaling_section(work)
    update_results(out, "predict_scaling", result, SCALING_HEADING, lines)


ENCODERS_HEADING = "## Location encoders × losses (real imagery)"
RECORD_KEY = ("dataset", "split", "seed", "objective", "protocol", "method")


def encoders_section(
    data: list[datasets.Dataset],
    work: Path,
    seeds: tuple[int, ...],
    earlier: list[dict],
    objectives: tuple[str, ...] = encoders.OBJECTIVES,
) -> tuple[dict, list[str]]:
    """Run (or resume) the encoders section's ``objectives`` on ``data``; its record (with the
    ``earlier`` records of other data sets and rows kept) and results.md lines."""
    today, here = time.strftime("%Y-%m-%d"), machine()
    fresh = []
    for record in encoders.run(data, work, seeds, TrainConfig(), objectives):
        fresh.append({**record, "measured": today, "machine": here})
        print(json.dumps({k: record[k] for k in (*RECORD_KEY, "median_error_m")}), flush=True)
    records = merged(earlier, fresh)
    result = {
        "machine": here,
        "date": today,
        "notes": {d.name: f"{d.note}; {d.epochs} epochs" for d in data},
        "records": records,
    }
    return result, encoders_lines(result)


def merged(earlier: list[dict], fresh: list[dict], key: tuple[str, ...] = RECORD_KEY) -> list[dict]:
    """``earlier`` with the records that ``fresh`` measured again replaced where they stood (so
    the tables keep their row order), and ``fresh``'s new records after them."""
    by_key = {tuple(r[k] for k in key): r for r in fresh}
    kept = [by_key.pop(tuple(r[k] for k in key), r) for r in earlier]
    return kept + list(by_key.values())


def when(records: list[dict]) -> str:
    """The dates and machines the encoders records were measured on, with the rows of each when
    they differ."""
    rows_by_run: dict[tuple[str, str], list[str]] = {}
    for record in records:
        run = (
            record.get("measured") or "an unrecorded date",
            record.get("machine") or "an unrecorded machine",
        )
        rows = rows_by_run.setdefault(run, [])
        if record["objective"] not in rows:
            rows.append(record["objective"])
    machines = {machine for _, machine in rows_by_run}
    if len(rows_by_run) == 1:
        return " on ".join(next(iter(rows_by_run)))
    dated = {run: f"{run[0]} ({', '.join(rows)})" for run, rows in sorted(rows_by_run.items())}
    if len(machines) == 1:
        return "; ".join(dated.values()) + f" on {machines.pop()}"
    return "; ".join(f"{text} on {machine}" for (_, machine), text in dated.items())


def encoders_lines(result: dict) -> list[str]:
    """The results.md lines of the encoders section's record."""
    records = result["records"]
    names = list(dict.fromkeys(r["dataset"] for r in records))
    return [
        ENCODERS_HEADING,
        "",
        encoders.__doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"Backbone swclip-lite, the defaults of `swclip train` and `swclip evaluate` (mode "
        f"prediction, K = 5), seeds {sorted({r['seed'] for r in records})}, 80/20 random and "
        f"spatial-block splits; figures are mean ± sd over seeds. Measured {when(records)}. "
        '`BENCH_ARGS="--section encoders"` re-runs this section alone (resumable with --work; '
        "`--objectives` re-runs some rows).",
        "",
        *(f"- **{name}**: {note}" for name, note in result["notes"].items()),
        "",
        *encoders.summarise(records, names),
    ]


def only_encoders(
    out: Path,
    work: Path,
    seeds: tuple[int, ...],
    names: list[str] | None,
    objectives: tuple[str, ...] | None = None,
) -> None:
    """`--section encoders`: measure that section alone (on the named real-imagery data sets and
    rows, default all) and update the results in place."""
    data = [d for d in real_imagery(work, epochs=12) if not names or d.name in names]
    unknown = set(objectives or ()) - set(encoders.OBJECTIVES)
    if unknown:
        raise SystemExit(f"not rows of the encoders section: {', '.join(sorted(unknown))}")
    results = out / "results.json"
    earlier = json.loads(results.read_text()).get("encoders", {}) if results.exists() else {}
    # records from before "measured" and "machine" were kept carry those of the run that wrote them
    kept = [
        {"measured": earlier.get("date"), "machine": earlier.get("machine"), **r}
        for r in earlier.get("records", [])
    ]
    rows = objectives or encoders.OBJECTIVES
    result, _ = encoders_section(data, work, seeds, kept, rows)
    result["notes"] = {**earlier.get("notes", {}), **result["notes"]}
    update_results(out, "encoders", result, ENCODERS_HEADING, encoders_lines(result))


def only_table1(out: Path, work: Path, seeds: tuple[int, ...], objectives: tuple[str, ...]) -> None:
    """`--section table1`: measure Table 1's rows ``objectives`` again on its data sets, with the
    prediction-methods and sensitivity rows that share their runs, keep every other record, and
    write those sections of results.md again (the others stay as they are). For a change of
    defaults that only some rows depend on."""
    unknown = set(objectives) - set(accuracy.OBJECTIVES)
    if unknown:
        raise SystemExit(f"not rows of Table 1: {', '.join(sorted(unknown))}")
    results, markdown = out / "results.json", out / "results.md"
    payload = json.loads(results.read_text())
    tabled_seeds = sorted({r["seed"] for r in payload["records"]})
    if sorted(seeds) != tabled_seeds:
        raise SystemExit(f"the tables have seeds {tabled_seeds}: measure those (--seeds)")
    base = TrainConfig()
    # the data sets the tables have: one added to the bench since is measured by a full run
    tabled = {r["dataset"] for r in payload["records"]}
    benched = build_datasets(work, quick=False)
    data = [d for d in benched if d.name in tabled]
    fresh = list(accuracy.run_accuracy(data, work, seeds=seeds, objectives=objectives, base=base))
    payload["records"] = merged(payload["records"], fresh)
    method_rows = tuple(o for o in ("clip", "swclip") if o in objectives)
    if method_rows:
        fresh = accuracy.run_accuracy(
            data, work, seeds=seeds, objectives=method_rows, protocols=("open",), methods=METHODS
        )
        payload["methods"] = merged(payload["methods"], list(fresh))
    variants = [
        label
        for label, objective, config, _ in sweep.variants(base)
        if objective in objectives and config == base  # the rows that run the defaults
    ]
    generated = [d for d in data if d.name in GENERATED]
    fresh = sweep.sweep(generated, work, base, seeds, variants)
    payload["sweep"] = merged(payload["sweep"], fresh, ("variant", *RECORD_KEY))
    again = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": list(objectives)}
    again.update(methods=list(method_rows), sweep=variants)
    payload["measured_again"] = [*payload.get("measured_again", []), again]
    results.write_text(json.dumps(payload, indent=1) + "\n")

    summary = accuracy.summarise(payload["records"])
    plots = [report.plot_errors(summary, d.name, out / "plots" / f"{d.name}.png") for d in data]
    text = markdown.read_text()
    start, end = text.index(SETTINGS_HEADING + "\n"), text.index("\n## Speed\n")
    names = [d.name for d in benched]
    lines = table1_lines(base, summary, data, plots, payload["methods"], names)
    text = text[:start] + "\n".join(lines) + "\n" + text[end:]
    lines = sweep_lines(payload["sweep"], seeds)
    text = replace_section(text, lines[0], lines)
    title, intro, rest = text.split("\n\n", 2)
    intro = intro.split(AGAIN)[0].rstrip() + " " + measured_again(payload["measured_again"])
    markdown.write_text("\n\n".join((title, intro, rest)))
    print(f"updated {markdown} and {results}")


AGAIN = "Measured again with `--section table1`"


def measured_again(entries: list[dict]) -> str:
    """The results.md sentence saying which Table 1 rows a later run measured again."""
    return " ".join(
        f"{AGAIN} on {e['date']} ({e['machine']}): rows {', '.join(e['rows'])} of Table 1"
        + (" and the prediction-methods rows of their runs" if e["methods"] else "")
        + (f" and the sensitivity rows {', '.join(e['sweep'])}" if e["sweep"] else "")
        + " (a change of defaults that only they depend on); the other figures are the full "
        "run's."
        for e in entries
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (minutes)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.md/json go")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--section",
        choices=("all", "predict-scaling", "encoders", "table1"),
        default="all",
        help="predict-scaling: only predict on 5,000 and 50,000 rows; encoders: only the location "
        "encoders x losses on real imagery; table1: only --objectives of Table 1 (with their "
        "prediction-methods and sensitivity rows); results updated in place",
    )
    parser.add_argument(
        "--datasets", help="with --section encoders: comma-separated data set names (default all)"
    )
    parser.add_argument(
        "--objectives",
        help="with --section encoders or table1: comma-separated rows to measure again (default "
        "all for encoders; table1 needs them); the other rows' records are kept",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="swclip-bench-"))
    if args.section == "predict-scaling":
        only_scaling(args.out, work)
        return
    if args.section == "table1":
        if not args.objectives:
            parser.error("--section table1 needs --objectives")
        only_table1(args.out, work, tuple(range(args.seeds)), tuple(args.objectives.split(",")))
        return
    if args.section == "encoders":
        names = args.datasets.split(",") if args.datasets else None
        rows = tuple(args.objectives.split(",")) if args.objectives else None
        only_encoders(args.out, work, tuple(range(args.seeds)), names, rows)
        return
    reused = sum(1 for _ in work.glob("runs/*/*/seed*/*"))  # runs of an earlier, resumed bench
    started = time.perf_counter()
    base = TrainConfig()
    data = build_datasets(work, args.quick)
    seeds = (0,) if args.quick else tuple(range(args.seeds))
    records = []
    for record in accuracy.run_accuracy(data, work, seeds=seeds, base=base):
        records.append(record)
        print(
            json.dumps(
                {
                    k: record[k]
                    for k in ("dataset", "split", "seed", "objective", "protocol", "median_error_m")
                }
            ),
            flush=True,
        )
    summary = accuracy.summarise(records)
    # Evaluation only: the prediction methods on the runs just trained.
    method_records = list(
        accuracy.run_accuracy(
            data,
            work,
            seeds=seeds,
            objectives=("clip", "swclip"),
            protocols=("open",),
            methods=METHODS,
            base=base,
        )
    )

    photo_paths = data[-1].samples["image_path"].tolist()
    speed_result = speed.measure_all(work, data[0].samples, photo_paths, quick=args.quick)
    generated = [d for d in data if d.name in GENERATED]
    sweep_records = sweep.sweep(generated, work, base, seeds)  # quick: one seed, one list
    scaling_result, scaling_lines = scaling_section(work)
    real = [d for d in data if d.name not in GENERATED]
    encoders_result, encoders_lines = encoders_section(real, work, seeds, [])

    args.out.mkdir(parents=True, exist_ok=True)
    plots = [
        report.plot_errors(summary, d.name, args.out / "plots" / f"{d.name}.png") for d in data
    ]
    payload = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "records": records,
        "speed": speed_result,
        "sweep": sweep_records,
        "methods": method_records,
        "predict_scaling": scaling_result,
        "encoders": encoders_result,
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")

    lines = [
        "# SW-CLIP benchmarks",
        "",
        f"Made by `make bench` ({'quick smoke run' if args.quick else 'full run'}) on "
        f"{payload['date']} in {(time.perf_counter() - started) / 60:.0f} min"
        f"{f' (resumed: {reused} earlier run folders reused)' if reused else ''}; machine: "
        f"{payload['machine']}. Backbone swclip-lite (EfficientNet-Lite0 + MiniLM-L6, offline), "
        f"seeds {list(seeds)}, 80/20 splits (random; spatial blocks hold whole grid cells out). "
        "Protocols: closed = gallery of the test samples' own captions (R@1 and Geo-Align "
        "defined); open = gallery of the training locations (errors only). SSI and City-Align "
        "are computed on the test images' embeddings. Figures are mean ± sd over seeds. The "
        "machine-readable records (one per seed) are in results.json.",
        "",
        "## Data",
        "",
        *(
            f"- **{d.name}**: {d.note}; {d.epochs} epochs; spatial blocks of {d.block_m:g} m."
            for d in data
        ),
        "",
        "## Objectives (rows)",
        "",
        "- **zero-shot**: the backbone without fine-tuning (plain CLIP); swclip-lite's projection "
        "heads are untrained (seeded), so this row is chance level.",
        "- **clip**: fine-tuned on the location captions with CLIP's one-hot InfoNCE: the "
        "paper's 'only location-as-text' ablation, and the baseline SW-CLIP must beat.",
        "- **swclip**: soft labels from the distance-decay kernel, plus neighbourhood consistency "
        'and regional fairness (docs/method.md, "SW-CLIP loss").',
        "- **semivariogram**, **geoclip**: the peers of docs/method.md; **image-knn**: nearest "
        "training images by frozen features; **fused**: swclip's caption retrieval mixed with "
        "image-knn.",
        "",
        *table1_lines(base, summary, data, plots, method_records),
        "",
        "## Speed",
        "",
        *speed_report.summarise_speed(speed_result),
    ]
    if sweep_records:
        lines += ["", *sweep_lines(sweep_records, seeds)]
    lines += ["", *scaling_lines, "", *encoders_lines]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'results.md'} and results.json")


if __name__ == "__main__":
    main()
