"""Training: SW-CLIP (docs/method.md, "SW-CLIP loss") and the plain CLIP baseline, on the CPU or
a GPU.

Two modes share one loop:
- ``cached``: the image tower is frozen, its features are computed once (and cached on disk); the
  image projection head and the upper text layers train. This is what a CPU can afford.
- ``finetune``: the image trunk trains too; images are decoded every epoch; AMP on CUDA.

A run folder holds ``config.json``, ``checkpoint.pt`` (trainable weights, optimiser and
schedule, so a run can resume), ``metrics.jsonl`` (one line per epoch), ``train_samples.csv`` (the
training locations and captions, the default gallery for prediction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .batches import neighbour_spacing_m
from .columns import clean_text
from .config import MIN_SCALE_M, SCALE_NEIGHBOURS, SCALE_PER_SPACING, TrainConfig
from .data.tensors import ImageDataset
from .device import autocast, precision_scope, resolve_device, resolve_precision
from .errors import ModelError
from .features import extract_image_features
from .geo import pairwise_haversine_m
from .io import ProgressFn, progress_span
from .loop import BatchPlan, Objective, TrainResult, finished_run, run_epochs
from .losses import LossWeights, clip_infonce, spatial_weights, swclip_loss
from .models import Backbone, create_backbone
from .runlock import owns_run_folder
from .runs import CHECKPOINT, CONFIG, load_checkpoint, seed_everything, start_run
from .semivariogram import (
    Semivariogram,
    embedding_semivariogram,
    plot_semivariogram,
    semivariogram_infonce,
)

SEMIVARIOGRAM = "semivariogram.json"
SEMIVARIOGRAM_PLOT = "semivariogram.png"
MAX_LOGIT_SCALE = 100.0
FEATURE_SHARE = 0.2  # share of the overall progress given to feature extraction in cached mode


def category_codes(values: pd.Series | None, n: int) -> torch.Tensor:
    """Integer codes for a label column, −1 for missing (−1 never equals anything)."""
    if values is None:
        return torch.full((n,), -1, dtype=torch.long)
    codes, _ = pd.factorize(values.map(clean_text), use_na_sentinel=True)
    return torch.as_tensor(codes, dtype=torch.long)


def similarity_logits(backbone: Backbone, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """``logit_scale · normalize(img) @ normalize(txt).T`` (docs/method.md, "Training")."""
    scale = backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    return scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def build_optimizer(backbone: Backbone, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; freshly initialised heads learn faster than the pretrained layers below them."""
    head_ids = {id(p) for p in backbone.head_parameters()}
    heads, body = [], []
    for param in backbone.parameters():
        if param.requires_grad:
            (heads if id(param) in head_ids else body).append(param)
    groups = [{"params": heads, "lr": config.head_lr}]
    if body:
        groups.append({"params": body, "lr": config.lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def trainable_state(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The weights a run changed; the rest comes back from the backbone's pretrained source."""
    names = {name for name, p in backbone.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in backbone.state_dict().items() if k in names}


def resolve_kernel(config: TrainConfig, samples: pd.DataFrame) -> TrainConfig:
    """``config`` with an automatic kernel scale (``scale_m=None``) replaced by the value for
    these training locations (the rule is in swclip_core.config, next to SCALE_PER_SPACING)."""
    if config.kernel.scale_m is not None:
        return config
    spacing = neighbour_spacing_m(
        samples["lat"].to_numpy(dtype=float),
        samples["lon"].to_numpy(dtype=float),
        k=SCALE_NEIGHBOURS,
    )
    scale = max(SCALE_PER_SPACING * (spacing or 0.0), MIN_SCALE_M)
    return replace(config, kernel=replace(config.kernel, scale_m=round(scale, 1)))


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
    """Train ``config.objective`` on ``samples`` (the table :func:`read_samples` returns) into
    ``run_dir``, which this process owns meanwhile (:func:`runlock.owns_run_folder`), its forward
    passes in ``config.precision`` (recorded as the precision that ran)."""
    precision = resolve_precision(config.precision, resolve_device(config.device))
    config = replace(config, precision=precision)
    if config.objective == "geoclip":  # GPS location encoder instead of captions
        from .objectives.geoclip import train_geoclip as trainer
    elif config.objective == "image-knn":  # nothing to train: the gallery is the images themselves
        from .knn import index_training_images as trainer
    else:
        trainer = train_caption_model
    with precision_scope(precision):
        return trainer(
            samples,
            config,
            run_dir,
            cache_dir=cache_dir,
            resume=resume,
            progress=progress,
            cancel=cancel,
        )


def train_caption_model(
    samples: pd.DataFrame,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """The objectives that learn from location captions: swclip, clip, semivariogram."""
    config = resolve_kernel(config, samples)
    run_dir, samples, captions, config = start_run(
        samples, config, run_dir, marker=CHECKPOINT, resume=resume
    )
    if resume and (done := finished_run(run_dir, config.epochs)):
        return done
    seed_everything(config.seed)
    device = resolve_device(config.device)
    backbone = create_backbone(config.backbone, config.pretrained, device=device)
    backbone.set_trainable(image_trunk=config.mode == "finetune", text_layers=config.text_layers)
    tokens = backbone.tokenize(captions)
    lat = torch.as_tensor(samples["lat"].to_numpy(), dtype=torch.float64)
    lon = torch.as_tensor(samples["lon"].to_numpy(), dtype=torch.float64)
    street = category_codes(samples.get("street"), len(samples))
    city = category_codes(samples.get("city"), len(samples))
    region_labels = samples.get("region")
    if region_labels is None or region_labels.isna().all():
        region_labels = samples.get("city")  # the fairness term needs groups; towns come next
    region = category_codes(region_labels, len(samples))

    features = None
    if config.mode == "cached":
        features = extract_image_features(
            backbone,
            samples["image_path"].tolist(),
            device=device,
            cache_dir=cache_dir,
            num_workers=config.num_workers,
            progress=progress_span(progress, 0.0, FEATURE_SHARE),
            cancel=cancel,
        )
        progress = progress_span(progress, FEATURE_SHARE, 1.0)
    images = ImageDataset(samples["image_path"].tolist(), backbone.preprocess)
    weights = LossWeights(
        lambda_nc=config.lambda_nc,
        lambda_fair=config.lambda_fair,
        nc_temperature=config.nc_temperature,
    )

    def refit_variogram(epoch: int) -> Semivariogram:
        return embedding_semivariogram(
            backbone,
            lat.numpy(),
            lon.numpy(),
            tokens,
            device=device,
            features=features,
            images=images,
            seed=config.seed + epoch,
        )

    variogram: Semivariogram | None = None  # the current fit, refreshed at every epoch start

    def batch_loss(idx: np.ndarray, batch_images: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        index = torch.as_tensor(idx)
        with autocast(device):
            if features is not None:
                img = backbone.image_head(features[index].to(device))
            else:
                img = backbone.encode_image(batch_images.to(device, non_blocking=True))
            txt = backbone.encode_text(tokens[index].to(device))
            logits = similarity_logits(backbone, img, txt)
        img, txt, logits = img.float(), txt.float(), logits.float()
        if config.objective == "clip":
            loss = clip_infonce(logits)
            return loss, {"infonce": float(loss.detach())}
        if config.objective == "semivariogram":
            cosine = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
            dist = pairwise_haversine_m(lat[index], lon[index]).to(device)
            loss = semivariogram_infonce(logits, dist, variogram, cosine=cosine)
            return loss, {"semivariogram_infonce": float(loss.detach())}
        kernel = config.kernel
        w = spatial_weights(
            lat[index].to(device),
            lon[index].to(device),
            scale_m=kernel.scale_m,
            cutoff_m=kernel.cutoff_m,
            kernel=kernel.kernel,
            street=street[index].to(device),
            city=city[index].to(device),
            street_bonus=kernel.street_bonus,
            city_bonus=kernel.city_bonus,
        ).float()
        return swclip_loss(logits, img, txt, w, region[index].to(device), weights)

    def on_epoch_start(epoch: int) -> None:
        nonlocal variogram
        if config.objective == "semivariogram":
            # γ(d) follows the embeddings as they train: refit from the current model.
            variogram = refit_variogram(epoch)

    objective = Objective(
        name=config.objective,
        model=backbone,
        optimizer=build_optimizer(backbone, config),
        batch_loss=batch_loss,
        trainable_state=lambda: trainable_state(backbone),
        load_trainable_state=lambda state: backbone.load_state_dict(state, strict=False),
        images=images if features is None else None,
        # cached mode: the frozen trunk keeps its normalisation statistics fixed
        train_mode=features is None,
        on_epoch_start=on_epoch_start,
    )
    result = run_epochs(
        objective,
        config,
        run_dir,
        BatchPlan(samples, config),
        device,
        resume=resume,
        progress=progress,
        cancel=cancel,
    )
    if config.objective == "semivariogram":
        final = refit_variogram(config.epochs)
        final.save(run_dir / SEMIVARIOGRAM)
        plot_semivariogram(final, run_dir / SEMIVARIOGRAM_PLOT)
    return result


def load_trained(
    run_dir: str | Path, device: str | torch.device = "auto"
) -> tuple[Backbone, TrainConfig]:
    """The backbone of a run folder with its trained weights, ready for prediction."""
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / CONFIG, run_dir / CHECKPOINT
    if not run_dir.is_dir() or not config_path.exists():
        raise ModelError(
            f"{run_dir} is not a trained model folder (needs {CONFIG} and {CHECKPOINT}); "
            "train one with `swclip train`"
        )
    config = TrainConfig.load(config_path)
    device = resolve_device(device) if isinstance(device, str) else device
    if config.objective == "image-knn":
        # No trained weights: the frozen backbone; its gallery comes from knn.load_knn(run_dir).
        return create_backbone(config.backbone, config.pretrained, device=device).eval(), config
    weights = load_checkpoint(checkpoint_path)["model"]
    try:
        if config.objective == "geoclip":  # image head and location encoder on the frozen backbone
            from .objectives.geoclip import load_geoclip

            return load_geoclip(config, weights, device), config
        backbone = create_backbone(config.backbone, config.pretrained, device=device)
        unexpected = sorted(set(weights) - set(backbone.state_dict()))
        if unexpected:
            raise KeyError(f"unexpected weights such as {unexpected[0]!r}")
        backbone.load_state_dict(weights, strict=False)
    except (RuntimeError, KeyError) as error:
        reason = str(error).strip("\"' \n").splitlines()[-1].strip()
        raise ModelError(
            f"{checkpoint_path} does not fit backbone {config.backbone!r} ({reason}); "
            "train it again"
        ) from None
    return backbone.eval(), config
