"""``swclip demo``: the whole workflow on bundled data, offline, on a CPU in a few minutes.

Part 1 trains SW-CLIP and the plain CLIP baseline on the same split of synthetic street scenes drawn
at real Isle of Man addresses (OpenStreetMap, ODbL) and prints the Table-1 columns
(docs/method.md, "Metrics") side by side. The scenes are procedurally generated, not photographs;
the output says so wherever they appear.
Part 2 trains and localizes on the bundled real geo-tagged photos (Lund and Panoramax test images).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .api import load_model, zero_shot_model
from .config import TrainConfig
from .data import read_samples
from .data.places import demo_places
from .data.splits import random_split
from .data.synthetic import generate_scenes
from .evaluate import TABLE1_COLUMNS, Evaluation, evaluate
from .io import write_csv, write_json
from .outputs import render_error_map, write_predictions_gpkg
from .runs import CHECKPOINT, caption_template
from .train import train

PHOTOS = Path(__file__).resolve().parent.parent / "resources" / "sample_data" / "photos"
SYNTHETIC_NOTE = "SYNTHETIC street scenes (procedurally drawn) at real Isle of Man addresses"
DEMO_EPOCHS = 30
PHOTO_EPOCHS = 30


def banner(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def split_frames(samples: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    train_idx, test_idx = random_split(len(samples), test_fraction=0.2, seed=seed)
    return samples.iloc[train_idx].reset_index(drop=True), samples.iloc[test_idx].reset_index(
        drop=True
    )


def train_and_evaluate(
    name: str,
    config: TrainConfig,
    train_set: pd.DataFrame,
    test_set: pd.DataFrame,
    runs: Path,
    cache_dir: Path | None,
) -> dict[str, Evaluation]:
    """Train one objective (or none, for zero-shot) and evaluate it closed and open."""
    run_dir = runs / name
    if name == "zero-shot":
        model = zero_shot_model(config, config.device)
    else:
        if (run_dir / CHECKPOINT).exists():
            print(f"{name}: reusing the trained model in {run_dir}")
        else:
            train(train_set, config, run_dir, cache_dir=cache_dir)
        model = load_model(run_dir, config.device)
    gallery = pd.read_csv(runs / "train_gallery.csv")
    results = {}
    for protocol in ("closed", "open"):
        evaluation = evaluate(
            model.network,
            model.config,
            test_set,
            device=model.device,
            protocol=protocol,
            gallery_table=gallery,
            model_fingerprint=model.fingerprint,
            cache_dir=cache_dir,
        )
        evaluation.context["objective"] = name
        results[protocol] = evaluation
    return results


def run_demo(
    out: str | Path,
    *,
    device: str = "auto",
    epochs: int | None = None,
    cache_dir: Path | None = None,
    n_places: int = 600,
) -> dict[str, dict[str, dict[str, float]]]:
    """Run both parts of the demo into ``out``; returns the figures it printed."""
    from .cli import format_table
    from .evaluate import caption_table

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or out / "cache"
    base = TrainConfig(device=device, epochs=epochs or DEMO_EPOCHS)

    banner(f"Part 1: SW-CLIP vs plain CLIP on {SYNTHETIC_NOTE}")
    places = demo_places(n=n_places, seed=0)
    scenes = generate_scenes(places, out / "data" / "synthetic_scenes", seed=0)
    scenes_csv = write_csv(scenes, out / "data" / "synthetic_scenes.csv")
    samples = read_samples(scenes_csv)
    train_set, test_set = split_frames(samples)
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    write_csv(caption_table(train_set, caption_template(base)), runs / "train_gallery.csv")
    print(
        f"{len(samples)} synthetic scenes in {samples['city'].nunique()} towns, "
        f"{samples['street'].nunique()} streets; random split: {len(train_set)} train / "
        f"{len(test_set)} test; backbone {base.backbone}, {base.epochs} epochs, seed {base.seed}"
    )
    objectives = {
        "zero-shot": base,
        "clip": TrainConfig(**{**base.to_dict(), "objective": "clip", "kernel": base.kernel}),
        "swclip": base,
    }
    results = {
        name: train_and_evaluate(name, config, train_set, test_set, runs, cache_dir)
        for name, config in objectives.items()
    }
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for protocol, gallery_note in (
        ("closed", "gallery = captions of the test scenes"),
        ("open", "gallery = captions of the training scenes"),
    ):
        rows = {name: r[protocol].summary for name, r in results.items()}
        figures[protocol] = rows
        banner(f"{protocol} set ({gallery_note}); synthetic data")
        print(format_table(rows, TABLE1_COLUMNS))
    print("zero-shot uses the untrained projection heads of swclip-lite: a chance-level reference.")

    maps = out / "maps"
    for name in ("swclip", "clip"):
        evaluation = results[name]["open"]
        write_predictions_gpkg(evaluation.predictions, out / f"synthetic_{name}_predictions.gpkg")
        render_error_map(
            evaluation.predictions,
            maps / f"synthetic_{name}_errors.png",
            title=f"{name} on {SYNTHETIC_NOTE} (open set)",
        )

    banner("Part 2: real geo-tagged photos (Lund, Sweden and Panoramax samples, France)")
    photos = read_samples(PHOTOS)
    photo_train, photo_test = split_frames(photos)
    photo_config = TrainConfig(device=device, epochs=epochs or PHOTO_EPOCHS, batch_size=16)
    photo_runs = out / "photo_runs"
    photo_runs.mkdir(exist_ok=True)
    write_csv(
        caption_table(photo_train, caption_template(photo_config)), photo_runs / "train_gallery.csv"
    )
    photo_results = train_and_evaluate(
        "swclip", photo_config, photo_train, photo_test, photo_runs, cache_dir
    )
    photo_eval = photo_results["open"]
    figures["photos_open"] = {"swclip": photo_eval.summary}
    print(
        f"{len(photos)} photos, {len(photo_train)} train / {len(photo_test)} test; "
        f"open-set median error {photo_eval.summary['median_error_m']:,.0f} m, "
        f"mean {photo_eval.summary['mean_error_m']:,.0f} m"
    )
    write_predictions_gpkg(photo_eval.predictions, out / "photos_swclip_predictions.gpkg")
    render_error_map(
        photo_eval.predictions,
        maps / "photos_swclip_errors.png",
        title="swclip on real photos (open set)",
    )
    write_json(out / "results.json", {"data": SYNTHETIC_NOTE, "figures": figures})
    banner("Outputs")
    for path in sorted(out.glob("*.gpkg")) + sorted(maps.glob("*.png")):
        print(f"  {path}")
    print(f"  {out / 'results.json'}")
    return figures
