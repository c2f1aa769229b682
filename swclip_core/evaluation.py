"""Localize a set of images and score it (docs/method.md, "Metrics"; the Table-1 columns).

Protocols (docs/method.md, "Protocols"):
- ``closed``: the gallery is the evaluated samples' own captions, so R@1 and Geo-Align are defined;
- ``open``: the gallery comes from elsewhere (by default the training locations); errors only.
SSI and City-Align are computed on the image embeddings, the ones a query is localized with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import distributed
from .captions import captions_for
from .config import DEFAULT_METHOD, MODE_RADIUS_M
from .device import autocast, current_precision, gallery_precision
from .errors import InputError
from .features import extract_image_features, extract_shares
from .fusion import KNN_WEIGHT, fuse_predictions
from .geo import haversine_m, pairwise_haversine_m
from .io import ProgressFn, progress_span
from .losses import MAX_LOGIT_SCALE
from .metrics import city_align, error_summary, geo_align, recall_at_k, ssi
from .objectives.image_knn import KNN_TEMPERATURE, KnnLocalizer
from .objectives.registry import get_objective
from .retrieval import Gallery, build_gallery, localize
from .runs import caption_template

PROTOCOLS = ("closed", "open")
EMBED_SHARE = 0.8  # share of the progress given to the photos' features; retrieval the rest
TABLE1_COLUMNS = ("median_error_m", "mean_error_m", "r_at_1", "geo_align", "ssi", "city_align")


@dataclass
class Evaluation:
    """Per-sample predictions and the summary figures of one evaluation."""

    predictions: pd.DataFrame
    summary: dict[str, float]
    context: dict[str, object] = field(default_factory=dict)  # protocol, gallery size, backbone...

    def table1(self) -> dict[str, float]:
        return {key: self.summary[key] for key in TABLE1_COLUMNS}


# Images embedded per round: only this many frozen trunk features (1280 floats each for
# swclip-lite) are held at once, so memory follows the (smaller) embeddings of the whole layer.
EMBED_CHUNK = 4096


@torch.no_grad()
def embed_images(
    backbone,
    image_paths: list[str],
    *,
    device: torch.device,
    trunk_finetuned: bool,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """L2-normalised image embeddings (N, D) on the CPU, computed :data:`EMBED_CHUNK` at a time."""
    backbone.eval()
    n = len(image_paths)
    embeddings = torch.empty((n, backbone.embed_dim), dtype=torch.float32)
    for start in range(0, n, EMBED_CHUNK):
        stop = min(start + EMBED_CHUNK, n)
        features = extract_image_features(
            backbone,
            image_paths[start:stop],
            device=device,
            cache_dir=cache_dir,
            use_cache=not trunk_finetuned,
            progress=progress_span(progress, start / n, stop / n),
            cancel=cancel,
        )
        with autocast(device):
            chunk = backbone.image_head(features.to(device)).float()
        embeddings[start:stop] = F.normalize(chunk, dim=-1).cpu()
    return embeddings


def caption_table(samples: pd.DataFrame, template) -> pd.DataFrame:
    """A gallery table (lat, lon, caption and the label columns) for a set of samples."""
    keep = [c for c in ("sample_id", "lat", "lon", "street", "city", "country") if c in samples]
    table = pd.DataFrame(samples[keep]).reset_index(drop=True)
    return table.assign(caption=captions_for(samples, template))


def evaluate(
    backbone,
    config,
    samples: pd.DataFrame,
    *,
    device: torch.device,
    protocol: str = "closed",
    gallery_table: pd.DataFrame | None = None,
    gallery: Gallery | None = None,
    model_fingerprint: str = "",
    k: int = 5,
    method: str = DEFAULT_METHOD,
    temperature: float | None = None,
    mode_radius_m: float = MODE_RADIUS_M,
    index: str = "auto",
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    knn: KnnLocalizer | None = None,
    knn_weight: float = KNN_WEIGHT,
    knn_temperature: float = KNN_TEMPERATURE,
    figures: bool = True,
) -> Evaluation:
    """Localize ``samples`` with a trained (or zero-shot) backbone and compute every metric.

    ``temperature`` of the weighted prediction defaults to the model's own learned temperature.
    An ``image-knn`` run localizes with its ``knn`` gallery (``Model.knn`` of
    :func:`swclip_core.api.load_model`) under either protocol: its gallery is the training images,
    so R@1 and Geo-Align (defined on captions) are NaN, and SSI/City-Align are computed on its
    frozen image features. For any other objective a
    ``knn`` gallery fuses image-kNN into the caption retrieval (open protocol only), with
    ``knn_weight`` its share and ``knn_temperature`` its softmax temperature. ``index`` is how
    the caption gallery is searched (:data:`~swclip_core.gallery_index.INDEX_KINDS`); an open
    ``gallery`` already built (:func:`build_gallery`) replaces ``gallery_table``, e.g. when a
    large layer is localized chunk by chunk. ``figures=False`` leaves SSI and City-Align out of the
    summary (NaN): they need every embedding of the evaluated set at once.
    """
    samples = samples.reset_index(drop=True)
    lat = samples["lat"].to_numpy(dtype=float)
    lon = samples["lon"].to_numpy(dtype=float)
    objective = get_objective(config.objective)
    if not objective.caption_gallery:
        return _evaluate_against_training_images(
            knn,
            config,
            samples,
            protocol=protocol,
            k=k,
            method=method,
            temperature=KNN_TEMPERATURE if temperature is None else temperature,
            mode_radius_m=mode_radius_m,
            cache_dir=cache_dir,
            progress=progress,
            cancel=cancel,
            figures=figures,
        )
    if knn is not None and protocol != "open":
        raise InputError(
            "fusing caption retrieval with image-kNN is defined for the open protocol only "
            "(the closed protocol's gallery is the evaluated photos' own captions)"
        )
    unknown = int((~np.isfinite(lat) | ~np.isfinite(lon)).sum())
    if protocol == "closed" and unknown:
        raise InputError(
            f"the closed protocol ranks each photo against its own location's caption, and "
            f"{unknown} photo(s) have no known location; localize them with the open protocol "
            "(swclip predict)"
        )
    template = caption_template(config)
    if temperature is None:
        temperature = float(1.0 / backbone.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))
    image_emb = embed_images(
        backbone,
        samples["image_path"].tolist(),
        device=device,
        trunk_finetuned=config.mode == "finetune",
        cache_dir=cache_dir,
        progress=progress_span(progress, 0.0, EMBED_SHARE),
        cancel=cancel,
    )

    def embed(table: pd.DataFrame) -> torch.Tensor:
        return objective.embed_gallery(backbone, table, device)

    _stage(progress, EMBED_SHARE, f"localizing {len(samples):,} photos")
    if protocol == "closed":
        gallery = build_gallery(
            backbone,
            caption_table(samples, template),
            device=device,
            model_fingerprint="",
            index=index,
            embed=embed,
        )
    elif gallery is None:
        if gallery_table is None:
            raise ValueError("the open protocol needs a gallery table")
        gallery = build_gallery(
            backbone,
            gallery_table,
            device=device,
            model_fingerprint=model_fingerprint,
            cache_dir=cache_dir if model_fingerprint else None,
            index=index,
            embed=embed,
        )
    rule = {"method": method, "mode_radius_m": mode_radius_m}
    pred = localize(
        image_emb,
        gallery.embeddings,
        gallery.table,
        k=k,
        temperature=temperature,
        gallery_index=gallery.index,
        **rule,
    )
    candidates_table = gallery.table
    if knn is not None:
        knn_pred = knn.localize(
            samples["image_path"].tolist(),
            k=k,
            temperature=knn_temperature,
            cache_dir=cache_dir,
            **rule,
            cancel=cancel,
        )
        pred, candidates_table = fuse_predictions(
            pred,
            gallery.table,
            temperature,
            knn_pred,
            knn.table,
            knn_temperature,
            knn_weight=knn_weight,
            **rule,
        )
    _stage(progress, 0.95, f"localized {len(samples):,} photos; scoring")
    errors, summary = location_scores(pred, samples, image_emb, figures=figures)
    rank = np.full(len(samples), -1)
    if protocol == "closed":
        sim = image_emb @ gallery.embeddings.T
        truth = torch.arange(len(samples))
        summary["r_at_1"] = recall_at_k(sim, truth, ks=(1,))[1]
        summary["geo_align"] = geo_align(sim.numpy(), pairwise_haversine_m(lat, lon))
        rank = (sim > sim[truth, truth][:, None]).sum(dim=1).numpy()
    else:
        summary["r_at_1"] = float("nan")
        summary["geo_align"] = float("nan")
    predictions = prediction_table(samples, pred, errors, rank, candidates_table)
    context = {
        "protocol": protocol,
        "gallery_size": len(gallery),
        "neighbour_queries": neighbour_queries(summary),
        "k": k,
        "method": method,
        "mode_radius_m": mode_radius_m,
        "temperature": temperature,
        "index": "exact" if gallery.index is None else gallery.index.kind,
        "backbone": config.backbone,
        "objective": config.objective,
        "seed": config.seed,
        "precision": current_precision(device),
        "gallery_precision": gallery_precision(device),
    }
    if knn is not None:
        context.update(
            objective=f"{config.objective}+image-knn",
            knn_gallery_size=len(knn.table),
            knn_weight=knn_weight,
            knn_temperature=knn_temperature,
        )
    return Evaluation(predictions, summary, context)


def localize_in_shares(samples: pd.DataFrame, **options) -> pd.DataFrame | None:
    """The predictions of :func:`evaluate` (``options``, without SSI and City-Align) for
    ``samples``; under torchrun each process localizes its contiguous share and rank 0 gets
    every row in order, the rows of one process (None on the others). A row's prediction needs
    only its own photo and the gallery."""
    share = samples.iloc[distributed.local_share(np.arange(len(samples)))]
    part = None
    if len(share):
        part = evaluate(samples=share, **options, figures=False).predictions
    parts = [p for p in distributed.gather_objects(part) or [] if p is not None]
    return pd.concat(parts, ignore_index=True) if parts else None


def extract_feature_shares(
    samples: pd.DataFrame,
    *,
    backbone,
    config,
    device: torch.device,
    knn: KnnLocalizer | None = None,
    cache_dir: Path | None = None,
    **_options,
) -> None:
    """Under torchrun, the photos' frozen image features (the costly part of an evaluation)
    extracted in shares into the cache, for rank 0 to evaluate from: SSI and City-Align need
    every embedding at once, and so come out as one process computes them. A fine-tuned image
    trunk's features are not cached: rank 0 then computes them alone. ``_options``: the rest of
    :func:`evaluate`'s, unused."""
    paths = samples["image_path"].tolist()
    backbones = [] if config.mode == "finetune" else [backbone]
    if knn is not None:  # image-kNN, as the model or fused
        backbones.append(knn.backbone)
    # one extraction per cache key: backbones with the same key compute the same features
    for distinct in {b.cache_key: b for b in backbones}.values():
        extract_shares(distinct, paths, device=device, cache_dir=cache_dir)


def location_scores(
    pred, samples: pd.DataFrame, embeddings: torch.Tensor, *, figures: bool = True
) -> tuple[np.ndarray, dict[str, float]]:
    """Per-sample errors (NaN where the true location is unknown) and the figures that need the
    truth (error summary, SSI, City-Align; the last two NaN without ``figures``), over the
    samples whose location is known."""
    lat = samples["lat"].to_numpy(dtype=float)
    lon = samples["lon"].to_numpy(dtype=float)
    errors = haversine_m(pred.lat, pred.lon, lat, lon)
    known = np.isfinite(errors)
    summary: dict[str, float] = dict(error_summary(errors[known]))
    if not figures:
        return errors, {**summary, "ssi": float("nan"), "city_align": float("nan")}
    summary.update(
        embedding_metrics(
            embeddings[torch.from_numpy(known)], samples[known].reset_index(drop=True)
        )
    )
    return errors, summary


def embedding_metrics(image_emb: torch.Tensor, samples: pd.DataFrame) -> dict[str, float]:
    """SSI and City-Align of the embeddings a query is localized with
    (docs/method.md, "Metrics").

    Both need neighbours: NaN for a single sample.
    """
    lat = samples["lat"].to_numpy(dtype=float)
    lon = samples["lon"].to_numpy(dtype=float)
    k = min(10, len(samples) - 1)
    if k < 1:
        return {"ssi": float("nan"), "city_align": float("nan")}
    return {
        "ssi": ssi(image_emb.numpy(), lat, lon, k=k),
        "city_align": (
            city_align(image_emb.numpy(), samples["city"].to_numpy(), k=k)
            if "city" in samples
            else float("nan")
        ),
    }


def neighbour_queries(summary: dict[str, float]) -> int:
    """How many samples SSI and City-Align averaged over (all located ones, or a seeded sample
    of :data:`metrics.NEIGHBOUR_QUERIES` of them)."""
    from . import metrics  # read at call time, like the metrics themselves

    return min(int(summary["n"]), metrics.NEIGHBOUR_QUERIES)


def prediction_table(
    samples: pd.DataFrame,
    pred,
    errors: np.ndarray,
    rank: np.ndarray,
    candidates_table: pd.DataFrame,
) -> pd.DataFrame:
    """One row per query: truth, prediction, error and the top-K candidates behind it."""
    cand_lat = candidates_table["lat"].to_numpy(dtype=float)
    cand_lon = candidates_table["lon"].to_numpy(dtype=float)
    candidates = [
        json.dumps(
            [
                [round(cand_lat[j], 6), round(cand_lon[j], 6), round(float(s), 4)]
                for j, s in zip(row_index, row_score, strict=True)
            ]
        )
        for row_index, row_score in zip(pred.top_index, pred.top_score, strict=True)
    ]
    return pd.DataFrame(
        {
            "sample_id": samples["sample_id"].astype(str),
            "image_path": samples["image_path"],
            "true_lat": samples["lat"].to_numpy(dtype=float),
            "true_lon": samples["lon"].to_numpy(dtype=float),
            "pred_lat": pred.lat,
            "pred_lon": pred.lon,
            "error_m": errors,
            "rank_of_truth": rank,
            "confidence": pred.confidence,
            "uncertainty_m": pred.uncertainty_m,
            "top_caption": candidates_table["caption"].to_numpy()[pred.top_index[:, 0]],
            "candidates": candidates,
            # the fairness choropleth groups by it; None where the input had no region
            "region": samples.get("region"),
        }
    )


def _stage(progress: ProgressFn | None, fraction: float, message: str) -> None:
    """Report the start of a stage that has no finer progress of its own."""
    if progress is not None:
        progress(fraction, message)


def _evaluate_against_training_images(
    knn: KnnLocalizer | None,
    config,
    samples: pd.DataFrame,
    *,
    protocol: str,
    k: int,
    method: str,
    temperature: float,
    mode_radius_m: float,
    cache_dir: Path | None,
    progress: ProgressFn | None,
    cancel: Callable[[], bool] | None,
    figures: bool = True,
) -> Evaluation:
    """:func:`evaluate` for an image-kNN run: the training images are the gallery."""
    if knn is None:
        raise ValueError("an image-knn run is evaluated with its gallery: pass its model's knn")
    queries = knn.embed(
        samples["image_path"].tolist(), cache_dir=cache_dir, progress=progress, cancel=cancel
    )
    pred = knn.predict(
        queries, k=k, method=method, temperature=temperature, mode_radius_m=mode_radius_m
    )
    errors, summary = location_scores(pred, samples, queries, figures=figures)
    summary.update(r_at_1=float("nan"), geo_align=float("nan"))  # no caption gallery to rank
    rank = np.full(len(samples), -1)
    context = {
        "protocol": protocol,
        "gallery": "training images",
        "neighbour_queries": neighbour_queries(summary),
        "gallery_size": len(knn.table),
        "k": k,
        "method": method,
        "mode_radius_m": mode_radius_m,
        "temperature": temperature,
        "backbone": config.backbone,
        "objective": config.objective,
        "seed": config.seed,
        "precision": current_precision(knn.device),
    }
    return Evaluation(prediction_table(samples, pred, errors, rank, knn.table), summary, context)
