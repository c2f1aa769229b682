"""The Table-1 comparison (docs/method.md, "Metrics"): all objectives on the same data, backbone,
epochs, splits and seeds."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import product
from pathlib import Path

import pandas as pd

from swclip_core.api import Model, evaluate, load_model, train, zero_shot_model
from swclip_core.config import DEFAULT_METHOD, TrainConfig
from swclip_core.data.splits import random_split, spatial_block_split
from swclip_core.evaluation import caption_table
from swclip_core.fusion import KNN_WEIGHT
from swclip_core.knn_weight import knn_weight_for
from swclip_core.objectives.registry import REGISTRY, get_objective
from swclip_core.runs import CHECKPOINT, CONFIG, METRICS, caption_template, read_config

from .datasets import Dataset

# The fused predictor mixes SW-CLIP's caption retrieval with image-kNN over the training images
# (`swclip predict --fuse`): it needs both runs, and is defined for the open protocol only.
FUSED = "fused"
# Every registered objective, between the untrained reference and the fused predictor.
OBJECTIVES = ("zero-shot", *REGISTRY, FUSED)
PROTOCOLS = ("closed", "open")
SPLITS = ("random", "spatial")
# Settings only the objectives with the sw loss read (swclip_core.objectives.spatial), and only
# those with the hybrid encoder; the others ignore them.
SWCLIP_ONLY = ("kernel", "lambda_nc", "lambda_fair", "nc_temperature")
HYBRID_ONLY = ("hybrid_combine",)
# "<objective>+knn": the objective fused with image-kNN, the share chosen by cross-validation on
# the training data (swclip_core.knn_weight), as `swclip predict --fuse` does by default.
WITH_KNN = "+knn"
FIGURES = ("median_error_m", "mean_error_m", "r_at_1", "geo_align", "ssi", "city_align")


def split_indices(dataset: Dataset, split: str, seed: int):
    samples = dataset.samples
    if split == "random":
        return random_split(len(samples), test_fraction=0.2, seed=seed)
    return spatial_block_split(
        samples["lat"].to_numpy(),
        samples["lon"].to_numpy(),
        block_m=dataset.block_m,
        test_fraction=0.2,
        seed=seed,
    )


def finished(run_dir: Path, objective: str, epochs: int) -> bool:
    """Whether a run folder holds a completed run (all epochs logged; an objective that trains
    nothing, such as image-kNN: the file it writes)."""
    marker = get_objective(objective).marker
    if marker != CHECKPOINT:
        return (run_dir / marker).exists()
    metrics = run_dir / METRICS
    return metrics.exists() and len(metrics.read_text().splitlines()) >= epochs


def run_folder(runs: Path, objective: str, config: TrainConfig) -> Path:
    """Where one objective's run with these settings lives. The name carries a digest of the
    settings the objective reads, so a resumed bench never scores a run trained with other
    settings, and runs that would be identical are shared (a sweep row equal to the defaults,
    a plain CLIP run whatever SW-CLIP's kernel is)."""
    settings = replace(config, objective=objective, device="", num_workers=0).to_dict()
    listing = REGISTRY[objective]
    for name in (SWCLIP_ONLY if listing.loss != "sw" else ()) + (
        HYBRID_ONLY if listing.encoder != "hybrid" else ()
    ):
        settings.pop(name)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode(), usedforsecurity=False)
    return runs / f"{objective}-{digest.hexdigest()[:10]}"


def trained_model(
    objective: str, config: TrainConfig, train_set, runs: Path, cache: Path
) -> tuple[Model, Model | None]:
    """The model of one objective (trained unless zero-shot) and, for a fused predictor, the
    image-kNN model it mixes in."""
    if objective == "zero-shot":
        return zero_shot_model(config, config.device), None
    if objective == FUSED or objective.endswith(WITH_KNN):
        base = "swclip" if objective == FUSED else objective.removesuffix(WITH_KNN)
        (model, _), (knn, _) = (
            trained_model(name, config, train_set, runs, cache) for name in (base, "image-knn")
        )
        return model, knn
    run_dir = run_folder(runs, objective, config)
    if not finished(run_dir, objective, config.epochs):
        # An interrupted bench resumes its runs instead of scoring half-trained models, with the
        # settings they started with (a shared run may differ in settings its objective ignores).
        resume = (run_dir / CONFIG).is_file()
        settings = (
            replace(read_config(run_dir), epochs=config.epochs)
            if resume
            else replace(config, objective=objective)
        )
        train(train_set, settings, run_dir, cache_dir=cache, resume=resume)
    return load_model(run_dir, config.device), None


def fused_weight(objective: str, model: Model, knn: Model | None, cache: Path) -> float:
    """The image-kNN share: "fused" keeps the fixed one, "<objective>+knn" is chosen by
    cross-validation as `swclip predict --fuse` does."""
    if knn is None or objective == FUSED:
        return KNN_WEIGHT
    return knn_weight_for(model, knn, cache_dir=cache)


def run_accuracy(
    datasets: list[Dataset],
    work: Path,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    objectives: tuple[str, ...] = OBJECTIVES,
    splits: tuple[str, ...] = SPLITS,
    protocols: tuple[str, ...] = PROTOCOLS,
    methods: tuple[str, ...] = (DEFAULT_METHOD,),
    base: TrainConfig | None = None,
) -> Iterator[dict]:
    """Yield one record per dataset × split × seed × objective × protocol × prediction method."""
    base = base or TrainConfig()
    cache = work / "cache"
    for dataset in datasets:
        for split in splits:
            for seed in seeds:
                train_idx, test_idx = split_indices(dataset, split, seed)
                train_set = dataset.samples.iloc[train_idx].reset_index(drop=True)
                test_set = dataset.samples.iloc[test_idx].reset_index(drop=True)
                config = replace(
                    base,
                    seed=seed,
                    epochs=dataset.epochs,
                    batch_size=min(base.batch_size, len(train_set)),
                )
                gallery = caption_table(train_set, caption_template(config))
                runs = work / "runs" / dataset.name / split / f"seed{seed}"
                for objective in objectives:
                    started = time.perf_counter()
                    model, fuse = trained_model(objective, config, train_set, runs, cache)
                    knn_weight = fused_weight(objective, model, fuse, cache)
                    for protocol, method in product(protocols, methods):
                        if fuse is not None and protocol != "open":
                            continue
                        result = evaluate(
                            test_set,
                            model,
                            protocol=protocol,
                            # image-kNN's gallery is its training images
                            gallery=gallery if model.knn is None else None,
                            fuse=fuse,
                            knn_weight=knn_weight,
                            cache_dir=cache,
                            method=method,
                        )
                        record = {
                            "dataset": dataset.name,
                            "objective": objective,
                            "protocol": protocol,
                            "method": method,
                            "split": split,
                            "seed": seed,
                            **{k: float(result.summary[k]) for k in FIGURES},
                            "n_train": len(train_set),
                            "n_test": len(test_set),
                            "gallery_size": int(result.context["gallery_size"]),
                            "epochs": config.epochs if objective != "zero-shot" else 0,
                            "seconds": time.perf_counter() - started,
                        }
                        record.update(
                            {k: float(v) for k, v in result.summary.items() if k.startswith("acc_")}
                        )
                        yield record


def summarise(records: list[dict]) -> pd.DataFrame:
    """Mean and standard deviation over seeds, one row per dataset/split/protocol/objective."""
    table = pd.DataFrame(records)
    keys = ["dataset", "split", "protocol", "objective"]
    grouped = table.groupby(keys, sort=False)[list(FIGURES)]
    summary = grouped.mean().join(grouped.std(ddof=0), rsuffix="_sd")
    summary["seeds"] = table.groupby(keys, sort=False)["seed"].nunique()
    return summary.reset_index()
