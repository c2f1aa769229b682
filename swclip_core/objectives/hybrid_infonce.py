"""``hybrid-infonce``: the hybrid caption + GPS location branch with GeoCLIP's one-hot InfoNCE
and queue, the reference that shows what the spatial soft labels add to that encoder
(docs/method.md, "Location encoders")."""

from __future__ import annotations

from .geoclip import Geoclip
from .hybrid import build_hybrid_model


class HybridInfonce(Geoclip):
    name = "hybrid-infonce"

    def build_model(self, config, device, *, official_weights=True):
        return build_hybrid_model(config, device, official_weights=official_weights)


OBJECTIVE = HybridInfonce()
