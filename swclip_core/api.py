"""The toolkit as a library: read samples, train, load a model, localize, evaluate, build galleries.

Everything takes data frames or paths and returns data frames and figures; the ``swclip`` command,
the QGIS worker, the demo and the benchmarks come through here and only parse and print. In a
notebook::

    import swclip_core as sw

    samples = sw.read_samples("photos/")            # a CSV, a point layer or a photo folder
    result = sw.train(samples, sw.TrainConfig(epochs=5), "runs/first")
    model = sw.load_model("runs/first")
    found = sw.localize(sw.read_samples("new_photos/", require_location=False), model)
    found.predictions[["sample_id", "pred_lat", "pred_lon", "error_m"]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import distributed
from .config import DEFAULT_METHOD, MODE_RADIUS_M, TrainConfig
from .errors import ModelError
from .io import ProgressFn
from .objectives.registry import get_objective
from .runlock import owns_run_folder
from .runs import (
    CHECKPOINT,
    caption_template,
    fingerprint,
    read_config,
    seed_everything,
    start_run,
)

if TYPE_CHECKING:
    import torch

    from .evaluation import Evaluation
    from .loop import TrainResult
    from .objectives.image_knn import KnnLocalizer

GALLERY_SOURCES = ("samples", "points", "lines", "grid")


@dataclass
class Model:
    """A model ready to localize: its network, settings, the fingerprint of its weights (which
    keys its cached gallery embeddings) and, for image-kNN, its gallery of training images."""

    network: Any  # models.Backbone, or models.geoclip.GeoclipModel for a geoclip run
    config: TrainConfig
    device: torch.device
    fingerprint: str = ""
    knn: KnnLocalizer | None = None
    run_dir: Path | None = None


@dataclass
class Joins:
    """Spatial joins that fill street, city or region where the samples lack them
    (:mod:`swclip_core.data.joins`); each layer is a path, with its layer and name field."""

    regions: str | Path | None = None
    regions_layer: str | None = None
    region_field: str | None = None
    regions_as: str = "region"  # or "city"
    streets: str | Path | None = None
    streets_layer: str | None = None
    street_field: str | None = None
    street_max_distance_m: float = 50.0
    region_grid_m: float | None = None  # square cells as regions where region is still missing


def apply_joins(samples: pd.DataFrame, joins: Joins) -> pd.DataFrame:
    """``samples`` with the joins applied; each appends what it filled to ``attrs["joins"]``."""
    from .data.joins import assign_grid_regions, join_regions, join_streets

    if joins.regions:
        samples = join_regions(
            samples,
            joins.regions,
            name_field=joins.region_field,
            target=joins.regions_as,
            layer=joins.regions_layer,
        )
    if joins.streets:
        samples = join_streets(
            samples,
            joins.streets,
            name_field=joins.street_field,
            max_distance_m=joins.street_max_distance_m,
            layer=joins.streets_layer,
        )
    if joins.region_grid_m is not None:
        samples = assign_grid_regions(samples, joins.region_grid_m)
    return samples


def read_samples(source: str | Path, *, joins: Joins | None = None, **options: Any) -> pd.DataFrame:
    """Geo-tagged photos from a CSV, a point layer, a photo folder or a raster, as the table every
    other function takes (one row per photo; bad records are skipped and listed in
    ``attrs["skipped"]``). ``options`` are those of :func:`swclip_core.data.read_samples`
    (column names, CRS, raster patches, ``require_location=False`` for photos to localize)."""
    from .data import read_samples as read

    samples = read(source, **options)
    return samples if joins is None else apply_joins(samples, joins)


def read_locations(
    source: str | Path, *, layer: str | None = None, joins: Joins | None = None
) -> pd.DataFrame:
    """Candidate locations from a point layer or a lat/lon CSV (for :func:`build_gallery`)."""
    from .data.joins import read_layer

    frame = read_layer(source, layer)
    return frame if joins is None else apply_joins(frame, joins)


@owns_run_folder
def train(
    samples: pd.DataFrame,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``config.objective`` on ``samples`` into the run folder ``run_dir``, which this
    process owns meanwhile (:func:`~swclip_core.runlock.owns_run_folder`), its forward passes in
    ``config.precision`` (recorded as the precision that ran).

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this with the same arguments: they
    train one model data-parallel on ``config.batch_size`` samples per step in all, rank 0 writes
    the folder, and a group that torchrun restarted after a worker died continues the run from
    its last checkpoint (as ``resume``)."""
    from .device import precision_scope, resolve_device, resolve_precision
    from .errors import InputError
    from .runs import CONFIG, Run

    device = distributed.start(resolve_device(config.device))
    config = replace(
        config,
        precision=resolve_precision(config.precision, device),
        **distributed.run_settings(device),
    )
    objective = get_objective(config.objective)
    if config.world_size > 1 and not objective.distributed:
        raise InputError(
            f"objective {config.objective} trains in one process only, not under torchrun with "
            f"{config.world_size} processes; run it without torchrun"
        )
    resume = resume or (distributed.restarted() and (Path(run_dir) / CONFIG).is_file())
    config = objective.prepare(config, samples)
    run_dir, samples, captions, config = start_run(
        samples, config, run_dir, marker=objective.marker, resume=resume
    )
    if resume and (done := objective.finished(run_dir, config)):
        return done
    seed_everything(config.seed)
    run = Run(run_dir, config, samples, captions, device, cache_dir, resume, progress, cancel)
    with precision_scope(config.precision):
        return objective.fit(run)


def load_trained(
    run_dir: str | Path, device: str | torch.device = "auto"
) -> tuple[Any, TrainConfig]:
    """The network of a run folder, in eval mode on ``device``, and the run's settings."""
    from .device import resolve_device

    config = read_config(run_dir)
    device = resolve_device(device) if isinstance(device, str) else device
    try:
        return get_objective(config.objective).load(Path(run_dir), config, device), config
    except (RuntimeError, KeyError) as error:  # weights of another shape or name
        reason = str(error).strip("\"' \n").splitlines()[-1].strip()
        raise ModelError(
            f"{Path(run_dir) / CHECKPOINT} does not fit backbone {config.backbone!r} ({reason}); "
            "train it again"
        ) from None


def load_model(run_dir: str | Path, device: str | torch.device = "auto") -> Model:
    """The trained model in a run folder (from ``swclip train``), ready to localize."""
    from .device import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    network, config = load_trained(run_dir, device)
    objective = get_objective(config.objective)
    knn = None if objective.caption_gallery else objective.image_gallery(run_dir, network, device)
    return Model(network, config, device, fingerprint(run_dir), knn, Path(run_dir))


def zero_shot_model(config: TrainConfig, device: str | torch.device = "auto") -> Model:
    """``config``'s backbone untrained: its projection heads are random (seeded by
    ``config.seed``), a chance-level reference for trained models."""
    from .device import resolve_device
    from .models import create_backbone

    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(config.seed)
    return Model(create_backbone(config.backbone, device=device), config, device)


def gallery_table(model: Model, gallery: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """The candidate locations of an open-set localization: the model's training locations
    (``None`` or ``"train"``), a gallery table, or a file of locations (GeoPackage/CSV/layer)."""
    from .galleries import gallery_from_file
    from .runs import training_gallery

    if isinstance(gallery, pd.DataFrame):
        return gallery
    if _is_training_gallery(gallery):
        if model.run_dir is None:
            raise ValueError("an untrained model has no training gallery: give one")
        return training_gallery(model.run_dir)
    return gallery_from_file(gallery, caption_template(model.config))


def evaluate(
    samples: pd.DataFrame,
    model: Model,
    *,
    protocol: str = "closed",
    gallery: str | Path | pd.DataFrame | None = None,
    fuse: Model | None = None,
    k: int = 5,
    method: str = DEFAULT_METHOD,
    temperature: float | None = None,
    mode_radius_m: float = MODE_RADIUS_M,
    index: str = "auto",
    knn_weight: float | None = None,
    knn_temperature: float | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    figures: bool = True,
) -> Evaluation:
    """Localize ``samples`` and score them (docs/method.md, "Metrics" and "Protocols").

    ``closed``: each photo is ranked against the evaluated photos' own captions (R@1 and
    Geo-Align defined); ``open``: against ``gallery`` (see :func:`gallery_table`). ``fuse``, an
    image-kNN model, mixes its nearest training images into caption retrieval (open protocol)
    with the share ``knn_weight`` (default 0.5; :func:`swclip_core.knn_weight.knn_weight_for`
    chooses it by cross-validation on the training data, as the command line does);
    ``index`` is how the gallery is searched (:data:`~swclip_core.gallery_index.INDEX_KINDS`).
    Returns per-photo ``predictions`` (a data frame) and ``summary`` figures; ``figures=False``
    leaves out SSI and City-Align (NaN), which compare every pair of the evaluated photos.
    ``predictions["in_training"]`` marks the photos that trained ``model`` (the same images by
    content, wherever the files lie: :func:`swclip_core.runs.seen_in_training`) and
    ``context["photos_seen_in_training"]`` counts them (their errors measure its fit, not its
    accuracy on new photos).
    """
    from .errors import InputError, ModelError
    from .evaluation import evaluate as score
    from .fusion import KNN_WEIGHT
    from .io import default_cache_dir
    from .objectives.image_knn import KNN_TEMPERATURE
    from .runs import seen_in_training, training_images

    knn = model.knn
    if knn is not None and (fuse is not None or not _is_training_gallery(gallery)):
        raise InputError(
            f"{model.run_dir} is an image-kNN model: its gallery is its training images, so "
            "--gallery and --fuse do not apply; leave them out"
        )
    if fuse is not None:
        knn = fuse.knn
        if knn is None:
            raise ModelError(
                f"{fuse.run_dir} is not an image-kNN run; make one with "
                "`swclip train --objective image-knn`"
            )
    table = gallery_table(model, gallery) if protocol == "open" and model.knn is None else None
    evaluation = score(
        model.network,
        model.config,
        samples,
        device=model.device,
        protocol=protocol,
        gallery_table=table,
        model_fingerprint=model.fingerprint,
        k=k,
        method=method,
        temperature=temperature,
        mode_radius_m=mode_radius_m,
        index=index,
        cache_dir=cache_dir or default_cache_dir(),
        progress=progress,
        cancel=cancel,
        knn=knn,
        knn_weight=KNN_WEIGHT if knn_weight is None else knn_weight,
        knn_temperature=KNN_TEMPERATURE if knn_temperature is None else knn_temperature,
        figures=figures,
    )
    if model.run_dir is not None:
        seen = seen_in_training(evaluation.predictions, training_images(model.run_dir))
        evaluation.predictions["in_training"] = seen
        evaluation.context["photos_seen_in_training"] = int(seen.sum())
    return evaluation


def localize(
    samples: pd.DataFrame,
    model: Model,
    *,
    gallery: str | Path | pd.DataFrame | None = None,
    **options: Any,
) -> Evaluation:
    """Predict where each photo was taken, among ``gallery``'s locations (default: the model's
    training locations). Photos without a known location are localized too; errors and figures
    cover those with one. ``options`` are those of :func:`evaluate`."""
    return evaluate(samples, model, protocol="open", gallery=gallery, **options)


def build_gallery(
    source: str | Path | pd.DataFrame,
    *,
    kind: str = "samples",
    spacing_m: float | None = None,
    name_field: str | None = None,
    layer: str | None = None,
    model: Model | None = None,
    out: str | Path | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """A gallery of candidate locations (lat, lon, street, city, country, caption).

    ``source`` and ``kind``: a table from :func:`read_samples` (``samples``: the photos'
    locations, with their street/city/country) or :func:`read_locations` (``points``), or a line
    layer (``lines``: a point every ``spacing_m`` along each line) or polygon layer (``grid``: a
    ``spacing_m`` grid inside the polygons). Captions are written the way ``model`` was trained
    (default: the default template); with ``out`` the gallery is saved as a GeoPackage, and with
    ``model`` it is embedded now (and cached, so predictions reuse it).
    """
    from .captions import DEFAULT_TEMPLATE
    from .errors import InputError
    from .galleries import (
        gallery_along_lines,
        gallery_from_points,
        gallery_from_samples,
        gallery_grid,
        save_gallery,
    )

    if kind not in GALLERY_SOURCES:
        raise InputError(f"unknown gallery source {kind!r}; choose one of {GALLERY_SOURCES}")
    template = DEFAULT_TEMPLATE if model is None else caption_template(model.config)
    if kind in ("samples", "points"):
        if not isinstance(source, pd.DataFrame):
            source = (
                read_samples(source, layer=layer)
                if kind == "samples"
                else read_locations(source, layer=layer)
            )
        make = gallery_from_samples if kind == "samples" else gallery_from_points
        table = make(source, template)
    else:
        make = gallery_along_lines if kind == "lines" else gallery_grid
        table = make(
            source, spacing_m=spacing_m, name_field=name_field, template=template, layer=layer
        )
    if out is not None:
        save_gallery(table, out)
    if model is not None:
        embed_gallery(table, model, cache_dir=cache_dir)
    return table


def write_predictions(
    evaluation: Evaluation,
    out: str | Path,
    *,
    crs: str = "EPSG:4326",
    skipped: list[dict] | None = None,
    regions: str | Path | None = None,
    regions_layer: str | None = None,
    region_field: str | None = None,
) -> Path:
    """The GeoPackage of a localization (predicted points, error lines, skipped records and, with
    a ``regions`` polygon layer, the region fairness choropleth), in ``crs``."""
    from .outputs import write_predictions_gpkg

    polygons = field = None
    if regions:
        from .data.joins import name_field_of, read_polygons

        polygons = read_polygons(regions, layer=regions_layer)
        field = name_field_of(polygons, region_field, regions, "--region-field")
    return write_predictions_gpkg(
        evaluation.predictions,
        out,
        crs=crs,
        skipped=skipped or [],
        regions=polygons,
        region_field=field,
    )


def read_predictions(path: str | Path, *, layer: str | None = None) -> pd.DataFrame:
    """A predictions table back from a GeoPackage written by :func:`write_predictions` (its
    ``predicted_points`` layer unless ``layer`` says otherwise) or from a CSV."""
    import pyogrio

    from .errors import InputError
    from .outputs import POINTS_LAYER

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    if layer is None:
        names = [str(name) for name, _ in pyogrio.list_layers(path)]
        layer = POINTS_LAYER if POINTS_LAYER in names else None
    return pyogrio.read_dataframe(path, layer=layer, read_geometry=False)


def _is_training_gallery(gallery: object) -> bool:
    return gallery is None or (isinstance(gallery, str | Path) and str(gallery) == "train")


def embed_gallery(
    table: pd.DataFrame, model: Model, *, cache_dir: Path | None = None, index: str = "auto"
):
    """``table``'s embeddings by ``model`` (a :class:`~swclip_core.retrieval.Gallery`, searched
    with ``index``: one of :data:`~swclip_core.gallery_index.INDEX_KINDS`), cached in
    ``cache_dir`` (default: the toolkit's cache folder) under the model's fingerprint; a model
    without one (untrained) is not cached."""
    from .io import default_cache_dir
    from .retrieval import build_gallery as embed

    objective = get_objective(model.config.objective)
    return embed(
        model.network,
        table,
        device=model.device,
        embed=lambda rows: objective.embed_gallery(model.network, rows, model.device),
        model_fingerprint=model.fingerprint,
        cache_dir=(cache_dir or default_cache_dir()) if model.fingerprint else None,
        index=index,
    )
