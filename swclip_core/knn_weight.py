"""The image-kNN share of a fused prediction, chosen by cross-validation on the training data
(docs/method.md, "Fusion").

When a user fuses a model with an image-kNN run and gives no ``--knn-weight``, the weight is
chosen the way held-out data would choose it. The model's training samples are cut at random
(the run's seed) into :data:`FOLDS` parts. Each part in turn is held out: the model's objective
is trained again on the other parts, an image-kNN gallery is built from them with the kNN run's
settings, and the held-out photos are localized against the other parts' locations with each
weight of :data:`WEIGHT_GRID`. Parts are held out until :data:`MIN_HELD_OUT` photos have been (or
all of them), so a small training set still chooses on every one of its photos, and a large one
trains once more, as an 80/20 split would. Of the weights whose median error over all held-out
photos is within one standard error of the lowest, the smallest wins (:func:`one_standard_error`):
image-kNN is mixed in only as far as the held-out photos show, beyond their noise, that it helps.

This costs one to :data:`FOLDS` more trainings of the model (in a temporary folder) the first
time; the result is kept in the cache folder, keyed by both models and the prediction settings,
and never written into a model folder.
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
from .fusion import KNN_WEIGHT
from .io import write_json
from .objectives.image_knn import KNN_TEMPERATURE

WEIGHT_GRID = tuple(i / 10 for i in range(11))
FOLDS = 5  # each part is a fifth of the training samples: every training run sees 80 % of them
MIN_HELD_OUT = 100  # below this many validation photos a median error is too noisy to choose on
MIN_VALIDATION = 5  # below this many in all, a choice would be noise
BOOTSTRAP_DRAWS = 1000  # resamples of the held-out photos for the standard error of a median


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
        f"image-kNN weight {choice['knn_weight']:g}: {how_chosen(choice, model.run_dir)}",
        flush=True,
    )
    return float(choice["knn_weight"])


def how_chosen(choice: dict, run_dir: Path) -> str:
    """What the user is told about a :func:`choose_knn_weight` choice."""
    if "reason" in choice:
        return f"the default, not cross-validated ({choice['reason']}); --knn-weight sets it"
    lowest = float(np.nanmin(choice["validation_median_error_m"]))
    return (
        f"chosen by cross-validation on {run_dir}'s training data, the smallest share within one "
        f"standard error ({choice['standard_error_m']:,.0f} m) of the lowest validation median "
        f"error ({lowest:,.0f} m); --knn-weight sets it"
    )


def validation_folds(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (fit, held-out) index pairs of :func:`choose_knn_weight` for ``n`` training samples:
    a seeded permutation cut into :data:`FOLDS` parts, held out in turn until
    :data:`MIN_HELD_OUT` samples have been (sorted index arrays; the parts are disjoint)."""
    order = np.random.default_rng(seed).permutation(n)
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    held_out = 0
    for part in np.array_split(order, FOLDS):
        if held_out >= MIN_HELD_OUT or not len(part):
            break
        folds.append((np.sort(np.setdiff1d(order, part)), np.sort(part)))
        held_out += len(part)
    return folds


def one_standard_error(errors: np.ndarray, seed: int) -> tuple[int, float]:
    """The row of ``errors`` (one per weight of :data:`WEIGHT_GRID`, one column per held-out
    photo) to use, and the standard error it was chosen with: the first row whose median is within
    one standard error of the lowest median (the one-standard-error rule of Breiman et al. 1984,
    *Classification and Regression Trees*; Hastie, Tibshirani & Friedman 2009, *The Elements of
    Statistical Learning*, §7.10). The standard error is the bootstrap standard deviation of the
    lowest row's median over :data:`BOOTSTRAP_DRAWS` resamples of the photos (seeded). The first
    rows give image-kNN the smallest share: with a few hundred held-out photos the medians of
    neighbouring weights differ by less than their noise, and the row that is lowest by chance
    would otherwise decide."""
    medians = np.median(errors, axis=1)
    lowest = int(np.nanargmin(medians))
    photos = errors.shape[1]
    draws = np.random.default_rng(seed).integers(0, photos, size=(BOOTSTRAP_DRAWS, photos))
    standard_error = float(np.median(errors[lowest][draws], axis=1).std())
    return int(np.flatnonzero(medians <= medians[lowest] + standard_error)[0]), standard_error


def choose_knn_weight(model: Any, knn: Any, *, cache_dir: Path, **options: Any) -> dict:
    """The weight of :data:`WEIGHT_GRID` that :func:`one_standard_error` picks from the errors
    of the held-out photos of :func:`validation_folds`, and the figures it was chosen from (see
    the module docstring)."""
    from .runs import training_gallery

    samples = training_gallery(model.run_dir)
    folds = validation_folds(len(samples), model.config.seed)
    held_out = sum(len(valid) for _, valid in folds)
    if held_out < MIN_VALIDATION:
        reason = f"only {held_out} training photos to validate on"
        return {"knn_weight": KNN_WEIGHT, "reason": reason}
    print(
        f"choosing the image-kNN weight on {held_out} of the {len(samples)} training photos of "
        f"{model.run_dir}, held out in {len(folds)} part(s): training {model.config.objective} "
        f"on the others {len(folds)} time(s) (cached for later predictions)",
        flush=True,
    )
    errors = np.hstack(
        [
            _held_out_errors(model, knn, samples.iloc[fit], samples.iloc[valid], cache_dir, options)
            for fit, valid in folds
        ]
    )
    chosen, standard_error = one_standard_error(errors, model.config.seed)
    return {
        "knn_weight": WEIGHT_GRID[chosen],
        "grid": list(WEIGHT_GRID),
        "validation_median_error_m": np.median(errors, axis=1).tolist(),
        "standard_error_m": standard_error,
        "validation_photos": held_out,
        "folds": len(folds),
        "seed": model.config.seed,
    }


def _held_out_errors(model, knn, fit, valid, cache_dir: Path, options: dict) -> np.ndarray:
    """``(len(WEIGHT_GRID), len(valid))`` errors (m) of the held-out photos ``valid``, localized
    against ``fit``'s locations by ``model``'s objective and ``knn``'s settings trained on
    ``fit``, fused with each weight of the grid."""
    from . import api

    valid = valid.reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="swclip-knn-weight-") as scratch:
        scratch = Path(scratch)
        settings = dict(cache_dir=cache_dir)
        api.train(fit, replace(model.config, input_digest=None), scratch / "model", **settings)
        api.train(fit, replace(knn.config, input_digest=None), scratch / "knn", **settings)
        fitted = api.load_model(scratch / "model", model.device)
        fitted_knn = api.load_model(scratch / "knn", model.device)
        return np.stack(
            [
                api.evaluate(
                    valid,
                    fitted,
                    protocol="open",
                    fuse=fitted_knn,
                    knn_weight=weight,
                    cache_dir=cache_dir,
                    figures=False,  # only the errors count; SSI would compare every pair 11 times
                    **options,
                )
                .predictions["error_m"]
                .to_numpy(dtype=float)
                for weight in WEIGHT_GRID
            ]
        )


def _key(model: Any, knn: Any, options: dict) -> str:
    identity = {
        "model": model.fingerprint,
        "knn": knn.knn.backbone.cache_key,
        "knn_samples": knn.config.input_digest,
        "options": {k: options[k] for k in sorted(options)},
        "grid": WEIGHT_GRID,
        "folds": (FOLDS, MIN_HELD_OUT),
        "rule": ("one standard error", BOOTSTRAP_DRAWS),
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
