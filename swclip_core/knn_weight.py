"""The image-kNN share of a fused prediction, chosen on a validation split of the training data
(docs/method.md, "Fusion").

When a user fuses a model with an image-kNN run and gives no ``--knn-weight``, the weight is
chosen the way a held-out set would choose it: the model's training samples are split (80 % /
20 %, the run's seed), the model's objective is trained again on the 80 % and an image-kNN gallery
is built from them with the kNN run's settings, and the 20 % are localized against the 80 %'s
locations with each weight of :data:`WEIGHT_GRID`; the weight with the lowest median error wins.
This costs one more training of the model (in a temporary folder) the first time; the result is
kept in the cache folder, keyed by both models and the prediction settings, and never written
into a model folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_METHOD, MODE_RADIUS_M
from .io import write_json
from .objectives.image_knn import KNN_TEMPERATURE

WEIGHT_GRID = tuple(i / 10 for i in range(11))
VALIDATION_FRACTION = 0.2
MIN_VALIDATION = 5  # below this many validation photos a choice would be noise


def knn_weight_for(
    model: Any,
    knn: Any,
    *,
    cache_dir: Path,
    k: int = 5,
    method: str = DEFAULT_METHOD,
    temperature: float | None = None,
    mode_radius_m: float = MODE_RADIUS_M,
    knn_temperature: float | None = None,
) -> float:
    """The weight of :func:`choose_knn_weight` for ``model`` fused with ``knn`` (api Models) and
    the prediction settings of :func:`swclip_core.api.evaluate`, from the cache when it was
    chosen before."""
    options = dict(
        k=k,
        method=method,
        temperature=temperature,
        mode_radius_m=mode_radius_m,
        knn_temperature=KNN_TEMPERATURE if knn_temperature is None else knn_temperature,
    )
    key = _key(model, knn, options)
    path = Path(cache_dir) / "knn_weights" / f"{key}.json"
    if path.is_file():
        choice = json.loads(path.read_text(encoding="utf-8"))
    else:
        choice = choose_knn_weight(model, knn, cache_dir=cache_dir, **options)
        write_json(path, choice)
    print(
        f"image-kNN weight {choice['knn_weight']:g}, chosen on a validation split of "
        f"{model.run_dir}'s training data (--knn-weight sets it)",
        flush=True,
    )
    return float(choice["knn_weight"])


def choose_knn_weight(model: Any, knn: Any, *, cache_dir: Path, **options: Any) -> dict:
    """The weight of :data:`WEIGHT_GRID` with the lowest validation median error, and the
    figures it was chosen from (see the module docstring)."""
    from . import api
    from .data.splits import random_split
    from .runs import training_gallery

    samples = training_gallery(model.run_dir)
    train_idx, valid_idx = random_split(
        len(samples), test_fraction=VALIDATION_FRACTION, seed=model.config.seed
    )
    if len(valid_idx) < MIN_VALIDATION:
        return {"knn_weight": 0.5, "reason": f"only {len(valid_idx)} validation photos"}
    fit, valid = samples.iloc[train_idx], samples.iloc[valid_idx].reset_index(drop=True)
    print(
        f"choosing the image-kNN weight on a validation split of {model.run_dir}'s training data "
        f"({len(valid)} of {len(samples)} photos): training {model.config.objective} on the "
        "others once (cached for later predictions)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="swclip-knn-weight-") as scratch:
        scratch = Path(scratch)
        settings = dict(cache_dir=cache_dir)
        api.train(fit, replace(model.config, input_digest=None), scratch / "model", **settings)
        api.train(fit, replace(knn.config, input_digest=None), scratch / "knn", **settings)
        fitted = api.load_model(scratch / "model", model.device)
        fitted_knn = api.load_model(scratch / "knn", model.device)
        errors = [
            float(
                api.evaluate(
                    valid,
                    fitted,
                    protocol="open",
                    fuse=fitted_knn,
                    knn_weight=weight,
                    cache_dir=cache_dir,
                    **options,
                ).summary["median_error_m"]
            )
            for weight in WEIGHT_GRID
        ]
    best = int(np.nanargmin(errors))
    return {
        "knn_weight": WEIGHT_GRID[best],
        "grid": list(WEIGHT_GRID),
        "validation_median_error_m": errors,
        "validation_photos": len(valid),
        "seed": model.config.seed,
    }


def _key(model: Any, knn: Any, options: dict) -> str:
    identity = {
        "model": model.fingerprint,
        "knn": knn.knn.backbone.cache_key,
        "knn_samples": knn.config.input_digest,
        "options": {k: options[k] for k in sorted(options)},
        "grid": WEIGHT_GRID,
        "fraction": VALIDATION_FRACTION,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
