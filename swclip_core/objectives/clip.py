"""Plain CLIP, the baseline: symmetric InfoNCE on location captions, one positive per photo
(docs/method.md, "CLIP baseline")."""

from __future__ import annotations

from ..losses import clip_infonce
from .contrastive import CaptionObjective


class Clip(CaptionObjective):
    name = "clip"

    def loss(self, training, index, img, txt, logits):
        loss = clip_infonce(logits)
        return loss, {"infonce": float(loss.detach())}


OBJECTIVE = Clip()
