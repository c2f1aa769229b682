"""InfoNCE with negatives re-weighted by a semivariogram of the embeddings, refitted at every
epoch (docs/method.md, "Semivariogram objective"). The run folder also holds the final fit,
``semivariogram.json``, and its plot, ``semivariogram.png``."""

from __future__ import annotations

import torch.nn.functional as F

from ..geo import pairwise_haversine_m
from ..semivariogram import (
    Semivariogram,
    embedding_semivariogram,
    plot_semivariogram,
    semivariogram_infonce,
)
from .contrastive import CaptionObjective, CaptionTraining

SEMIVARIOGRAM = "semivariogram.json"
SEMIVARIOGRAM_PLOT = "semivariogram.png"


def refit(training: CaptionTraining, epoch: int) -> Semivariogram:
    """γ(d) of the model as it is now: the embeddings move as they train."""
    return embedding_semivariogram(
        training.backbone,
        training.lat.numpy(),
        training.lon.numpy(),
        training.tokens,
        device=training.device,
        features=training.features,
        images=training.images,
        seed=training.config.seed + epoch,
    )


class SemivariogramObjective(CaptionObjective):
    name = "semivariogram"

    def start_epoch(self, training, epoch):
        training.state["variogram"] = refit(training, epoch)

    def loss(self, training, index, img, txt, logits):
        cosine = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        dist = pairwise_haversine_m(training.lat[index], training.lon[index]).to(training.device)
        loss = semivariogram_infonce(logits, dist, training.state["variogram"], cosine=cosine)
        return loss, {"semivariogram_infonce": float(loss.detach())}

    def finish(self, training):
        final = refit(training, training.config.epochs)
        final.save(training.run.dir / SEMIVARIOGRAM)
        plot_semivariogram(final, training.run.dir / SEMIVARIOGRAM_PLOT)


OBJECTIVE = SemivariogramObjective()
