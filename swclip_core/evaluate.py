"""Localize a set of images and score it with the SPEC section 7 metrics (Table-1 columns).

Protocols (SPEC section 8):
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

from .captions import captions_for
from .device import autocast
from .features import ProgressFn, extract_image_features
from .geo import haversine_m, pairwise_haversine_m
from .metrics import city_align, error_summary, geo_align, recall_at_k, ssi
from .retrieval import Gallery, build_gallery, predict_locations, top_k
from .train import caption_template

PROTOCOLS = ("closed", "open")
TABLE1_COLUMNS = ("median_error_m", "mean_error_m", "r_at_1", "geo_align", "ssi", "city_align")


@dataclass
class Evaluation:
    """Per-sample predictions and the summary figures of one evaluation."""

    predictions: pd.DataFrame
    summary: dict[str, float]
    context: dict[str, object] = field(default_factory=dict)  # protocol, gallery size, backbone...

    def table1(self) -> dict[str, float]:
        return {key: self.summary[key] for key in TABLE1_COLUMNS}


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
    """L2-normalised image embeddings (N, D) on the CPU."""
    features = extract_image_features(
        backbone,
        image_paths,
        device=device,
        cache_dir=cache_dir,
        use_cache=not trunk_finetuned,
        progress=progress,
        cancel=cancel,
    )
    backbone.eval()
    with autocast(device):
        embeddings = backbone.image_head(features.to(device)).float()
    return F.normalize(embeddings, dim=-1).cpu()


def caption_table(samples: pd.DataFrame, template) -> pd.DataFrame:
    """A gallery table (lat, lon, caption and the label columns) for a set of samples."""
    keep = [c for c in ("sample_id", "lat", "lon", "street", "city", "country") if c in samples]
    table = pd.DataFrame(samples[keep]).reset_index(drop=True)
    return table.assign(caption=captions_for(samples, template))


def localize(
    image_embeddings: torch.Tensor,
    gallery: Gallery,
    *,
    k: int = 5,
    method: str = "weighted",
    temperature: float = 0.05,
):
    """Top-K retrieval and predicted coordinates for normalised image embeddings."""
    scores, index = top_k(image_embeddings, gallery.embeddings, k)
    return predict_locations(
        scores.numpy(),
        index.numpy(),
        gallery.table["lat"].to_numpy(dtype=float),
        gallery.table["lon"].to_numpy(dtype=float),
        method=method,
        temperature=temperature,
    )


def evaluate(
    backbone,
    config,
    samples: pd.DataFrame,
    *,
    device: torch.device,
    protocol: str = "closed",
    gallery_table: pd.DataFrame | None = None,
    model_fingerprint: str = "",
    k: int = 5,
    method: str = "weighted",
    temperature: float | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Evaluation:
    """Localize ``samples`` with a trained (or zero-shot) backbone and compute every metric.

    ``temperature`` of the weighted prediction defaults to the model's own learned temperature.
    """
    samples = samples.reset_index(drop=True)
    template = caption_template(config)
    lat = samples["lat"].to_numpy(dtype=float)
    lon = samples["lon"].to_numpy(dtype=float)
    if temperature is None:
        temperature = float(1.0 / backbone.logit_scale.detach().exp().clamp(max=100.0))
    image_emb = embed_images(
        backbone,
        samples["image_path"].tolist(),
        device=device,
        trunk_finetuned=config.mode == "finetune",
        cache_dir=cache_dir,
        progress=progress,
        cancel=cancel,
    )
    own_table = caption_table(samples, template)
    if protocol == "closed":
        gallery = build_gallery(backbone, own_table, device=device, model_fingerprint="")
    else:
        if gallery_table is None:
            raise ValueError("the open protocol needs a gallery table")
        gallery = build_gallery(
            backbone,
            gallery_table,
            device=device,
            model_fingerprint=model_fingerprint,
            cache_dir=cache_dir if model_fingerprint else None,
        )
    pred = localize(image_emb, gallery, k=k, method=method, temperature=temperature)
    errors = haversine_m(pred.lat, pred.lon, lat, lon)
    summary: dict[str, float] = dict(error_summary(errors))
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
    summary["ssi"] = ssi(image_emb.numpy(), lat, lon, k=min(10, len(samples) - 1))
    summary["city_align"] = (
        city_align(image_emb.numpy(), samples["city"].to_numpy(), k=min(10, len(samples) - 1))
        if "city" in samples
        else float("nan")
    )
    gallery_lat = gallery.table["lat"].to_numpy(dtype=float)
    gallery_lon = gallery.table["lon"].to_numpy(dtype=float)
    candidates = [
        json.dumps(
            [
                [round(gallery_lat[j], 6), round(gallery_lon[j], 6), round(float(s), 4)]
                for j, s in zip(row_index, row_score, strict=True)
            ]
        )
        for row_index, row_score in zip(pred.top_index, pred.top_score, strict=True)
    ]
    predictions = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].astype(str),
            "image_path": samples["image_path"],
            "true_lat": lat,
            "true_lon": lon,
            "pred_lat": pred.lat,
            "pred_lon": pred.lon,
            "error_m": errors,
            "rank_of_truth": rank,
            "confidence": pred.confidence,
            "uncertainty_m": pred.uncertainty_m,
            "top_caption": gallery.table["caption"].to_numpy()[pred.top_index[:, 0]],
            "candidates": candidates,
        }
    )
    context = {
        "protocol": protocol,
        "gallery_size": len(gallery),
        "k": k,
        "method": method,
        "temperature": temperature,
        "backbone": config.backbone,
        "objective": config.objective,
        "seed": config.seed,
    }
    return Evaluation(predictions, summary, context)
