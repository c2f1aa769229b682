"""SW-CLIP, the default objective: spatial soft labels plus neighbourhood-consistency and regional
fairness terms (docs/method.md, "SW-CLIP loss"), on location captions."""

from __future__ import annotations

from .contrastive import CaptionObjective, CaptionTraining
from .spatial import SpatialLoss


class Swclip(CaptionObjective):
    name = "swclip"

    def start(self, training: CaptionTraining) -> None:
        training.state["spatial"] = SpatialLoss(training.run.samples, training.config)

    def loss(self, training, index, img, txt, logits):
        return training.state["spatial"](index, img, txt, logits)


OBJECTIVE = Swclip()
