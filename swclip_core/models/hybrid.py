"""A location branch that reads both the caption and the coordinates of a place
(docs/method.md, "Location encoders").

A caption read by a text tower knows street and town names but only a rounded number for where a
place is; GeoCLIP's GPS encoder knows the coordinates finely but no names. The hybrid location
embedding combines both, on a GeoCLIP-style model (frozen image features -> MLP head, 512-d):

- ``sum``:    ``loc = ĝ + t̂``, the L2-normalised GPS embedding plus the L2-normalised caption
  embedding projected to 512-d (each branch counts equally from the start);
- ``concat``: ``loc = W [g; t] + b``, one linear layer over both (it learns how to mix them).

The text tower's top ``text_layers`` layers and its projection train with the image head, the GPS
encoder (from GeoCLIP's official weights) and the fusion layers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import HYBRID_COMBINES
from .geoclip import LOCATION_DIM, GeoclipModel

COMBINES = HYBRID_COMBINES


class HybridModel(GeoclipModel):
    """GeoCLIP's model whose location branch also reads the place's caption.

    Everything :class:`GeoclipModel` offers evaluation, plus :meth:`encode_text`, and
    :meth:`encode_locations` taking the captions' text embeddings with the coordinates.
    """

    reads_captions = True

    def __init__(
        self,
        backbone: nn.Module,
        *,
        combine: str = "sum",
        text_layers: int | None = 2,
        official_weights: bool = True,
    ) -> None:
        if combine not in COMBINES:
            raise ValueError(f"unknown combination {combine!r}; choose one of {COMBINES}")
        super().__init__(backbone, official_weights=official_weights)
        self.combine = combine
        # The text tower's top layers and projection train; the backbone's own image projection
        # is not used (the MLP head replaces it).
        backbone.set_trainable(image_trunk=False, text_layers=text_layers)
        backbone.image_head.requires_grad_(False)
        backbone.logit_scale.requires_grad_(False)
        text_dim = int(backbone.embed_dim)
        if combine == "sum":
            self.text_proj = nn.Linear(text_dim, LOCATION_DIM)
        else:
            self.fuse = nn.Linear(LOCATION_DIM + text_dim, LOCATION_DIM)
        self.to(backbone.logit_scale.device)

    def caption_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The caption side's trained parameters: the new ones (the combination layer and the
        text tower's new head) and the pretrained ones (the text tower's top layers)."""
        backbone = self.backbone
        new_ids = {id(p) for p in backbone.head_parameters()}
        trained = [p for p in backbone.parameters() if p.requires_grad]
        combination = [
            p for name, p in self.named_parameters() if name.startswith(("text_proj", "fuse"))
        ]
        return (
            combination + [p for p in trained if id(p) in new_ids],
            [p for p in trained if id(p) not in new_ids],
        )

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The captions' text embeddings ``(B, text_dim)`` (the backbone's text tower)."""
        return self.backbone.encode_text(tokens)

    def encode_locations(
        self, latlon_deg: torch.Tensor, text: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Location embeddings ``(N, 512)``, not normalised, of (lat, lon) degrees and the text
        embeddings (:meth:`encode_text`) of the same N places' captions."""
        if text is None:
            raise ValueError("a hybrid location embedding needs the places' captions")
        gps = self.location_encoder(latlon_deg)
        text = text.to(gps.dtype)
        if self.combine == "sum":
            return F.normalize(gps, dim=-1) + F.normalize(self.text_proj(text), dim=-1)
        return self.fuse(torch.cat((gps, text), dim=-1))

    @torch.no_grad()
    def embed_locations(
        self, table: pd.DataFrame, device: torch.device, batch_size: int = 256
    ) -> torch.Tensor:
        """L2-normalised location embeddings ``(N, 512)`` on the CPU of ``table``'s lat, lon and
        caption."""
        was_training = self.training
        self.eval()
        latlon = torch.as_tensor(
            np.stack([table["lat"].to_numpy(float), table["lon"].to_numpy(float)], axis=1),
            dtype=torch.float32,
        )
        captions = table["caption"].astype(str).tolist()
        chunks = []
        for start in range(0, len(latlon), batch_size):
            tokens = self.backbone.tokenize(captions[start : start + batch_size])
            text = self.encode_text(tokens.to(device))
            embedding = self.encode_locations(latlon[start : start + batch_size].to(device), text)
            chunks.append(F.normalize(embedding.float(), dim=-1).cpu())
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """GeoCLIP's trained tensors plus the backbone's trained text layers."""
        trained = {name for name, p in self.named_parameters() if p.requires_grad}
        return {
            k: v.detach().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("backbone.") or k in trained
        }
