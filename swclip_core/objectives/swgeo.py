"""``swgeo``: GeoCLIP's GPS location encoder and queue trained with the SW-CLIP loss
(docs/method.md, "Location encoders"): spatial soft labels over the batch's locations and the
queued ones, neighbourhood consistency and regional fairness."""

from __future__ import annotations

from ..runs import Run
from .geoclip import Geoclip
from .spatial import SpatialLoss, resolve_kernel


class SwGeo(Geoclip):
    name = "swgeo"

    def prepare(self, config, samples):
        return resolve_kernel(super().prepare(config, samples), samples)

    def start(self, run: Run) -> None:
        self.spatial = SpatialLoss(run.samples, run.config)

    def loss(self, index, img, loc, logits, queued_index):
        return self.spatial(index, img, loc, logits, queued_index)


OBJECTIVE = SwGeo()
