"""The spatial loss that every SW objective shares, whatever encodes its locations
(docs/method.md, "SW-CLIP loss" and "Location encoders").

The soft labels only need the pairwise distances of the batch's locations (and of the extra
candidate locations a queue adds), so the same kernel, street/city bonuses, neighbourhood
consistency and regional fairness serve the caption, GPS and hybrid location encoders.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch

from ..batches import neighbour_spacing_m
from ..columns import clean_text
from ..config import MIN_SCALE_M, SCALE_NEIGHBOURS, SCALE_PER_SPACING, TrainConfig
from ..losses import Candidates, LossWeights, spatial_weights, swclip_loss


def category_codes(values: pd.Series | None, n: int) -> torch.Tensor:
    """Integer codes for a label column, −1 for missing (−1 never equals anything)."""
    if values is None:
        return torch.full((n,), -1, dtype=torch.long)
    codes, _ = pd.factorize(values.map(clean_text), use_na_sentinel=True)
    return torch.as_tensor(codes, dtype=torch.long)


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


class SpatialLoss:
    """The SW-CLIP loss of batches of one training set: its locations and label codes."""

    def __init__(self, samples: pd.DataFrame, config: TrainConfig) -> None:
        n = len(samples)
        self.config = config
        self.lat = torch.as_tensor(samples["lat"].to_numpy(), dtype=torch.float64)
        self.lon = torch.as_tensor(samples["lon"].to_numpy(), dtype=torch.float64)
        regions = samples.get("region")
        if regions is None or regions.isna().all():
            regions = samples.get("city")  # the fairness term needs groups; towns come next
        self.street = category_codes(samples.get("street"), n)
        self.city = category_codes(samples.get("city"), n)
        self.region = category_codes(regions, n)

    def weights(self, index: torch.Tensor, queued: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial weights (B, B + Q) of the samples ``index`` against themselves and the queued
        samples ``queued`` (Q indices); a sample's own queue entry gets 0 (never a target: its
        logit is masked)."""
        kernel = self.config.kernel
        extra = None
        if queued is not None and len(queued):
            extra = Candidates(
                self.lat[queued], self.lon[queued], self.street[queued], self.city[queued]
            )
        w = spatial_weights(
            self.lat[index],
            self.lon[index],
            scale_m=kernel.scale_m,
            cutoff_m=kernel.cutoff_m,
            kernel=kernel.kernel,
            street=self.street[index],
            city=self.city[index],
            street_bonus=kernel.street_bonus,
            city_bonus=kernel.city_bonus,
            extra=extra,
        ).float()
        if extra is not None:
            own = index[:, None] == queued[None, :]
            w[:, len(index) :] = w[:, len(index) :].masked_fill(own, 0.0)
        return w

    def __call__(
        self,
        index: torch.Tensor,
        img: torch.Tensor,
        loc: torch.Tensor,
        logits: torch.Tensor,
        queued: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the batch ``index``: image and location embeddings (B, D) and the logits
        (B, B + Q) of its images against its locations and the queued ones."""
        device = logits.device
        config = self.config
        weights = LossWeights(
            lambda_nc=config.lambda_nc,
            lambda_fair=config.lambda_fair,
            nc_temperature=config.nc_temperature,
        )
        w = self.weights(index, queued).to(device)
        return swclip_loss(logits, img, loc, w, self.region[index].to(device), weights)
