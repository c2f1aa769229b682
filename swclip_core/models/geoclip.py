"""GeoCLIP's location encoder and a GeoCLIP-style model on SW-CLIP backbones
(docs/method.md, "Peers").

Facts from the GeoCLIP paper (Vivanco Cepeda, Nayak, Shah, NeurIPS 2023, arXiv 2309.16020) and the
MIT-licensed PyPI package ``geoclip`` 1.3.0, whose shipped location-encoder weights are loaded here:

- (lat, lon) in degrees -> Equal Earth projection (Šavrič, Patterson, Jenny 2018) in radians,
  scaled by 66.50336/180 so that the map spans about [-1, 1];
- per σ in {2⁰, 2⁴, 2⁸}: random Fourier features ``[cos 2πBv, sin 2πBv]`` with a frozen Gaussian
  B (256 × 2, entries N(0, σ²)), then an MLP 512 → 1024 → 1024 → 1024 → 512 (ReLU between);
- the three branch outputs are summed, giving a 512-d location embedding (not normalised).

The arithmetic follows the package's float32 order of operations. This matters: with σ = 2⁸ the
Fourier phases reach thousands of radians, so one rounding step more or less in the projection
moves a phase by ~1e-4 and the embedding by more than the 1e-5 the equivalence test allows.
"""

from __future__ import annotations

import math
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from swclip_core.errors import ModelError

# Equal Earth polynomial coefficients and GeoCLIP's scale factor (projected units / 180).
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SCALE = 66.50336
SIGMAS = (2.0**0, 2.0**4, 2.0**8)
RFF_SIZE = 256
HIDDEN = 1024
LOCATION_DIM = 512
WEIGHTS_FILE = ("model", "weights", "location_encoder_weights.pth")
# Seed of the Fourier matrices when no official weights are loaded: fixed, so two fresh encoders
# are identical and a checkpoint always matches the encoder it is loaded into.
RFF_SEED = 0


def equal_earth(latlon_deg: torch.Tensor) -> torch.Tensor:
    """Equal Earth (x, y) of ``(N, 2)`` (lat, lon) degrees, scaled by GeoCLIP's 66.50336/180."""
    lat = torch.deg2rad(latlon_deg[:, 0])
    lon = torch.deg2rad(latlon_deg[:, 1])
    root3 = torch.sqrt(torch.tensor(3.0, dtype=latlon_deg.dtype, device=latlon_deg.device))
    theta = torch.asin((root3 / 2) * torch.sin(lat))
    # Term order as in the package (highest power first), for identical float32 rounding.
    slope = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = (2 * root3 * lon * torch.cos(theta)) / slope
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return (torch.stack((x, y), dim=1) * SCALE) / 180


class FourierBranch(nn.Module):
    """One σ of the hierarchy: frozen random Fourier features, then a 4-layer MLP."""

    def __init__(self, sigma: float, generator: torch.Generator) -> None:
        super().__init__()
        self.sigma = sigma
        # A buffer, not a parameter: B is never trained and never reaches an optimiser.
        self.register_buffer("b", torch.randn(RFF_SIZE, 2, generator=generator) * sigma)
        self.mlp = nn.Sequential(
            nn.Linear(2 * RFF_SIZE, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, LOCATION_DIM),
        )

    def fourier_features(self, projected: torch.Tensor) -> torch.Tensor:
        """``[cos 2πBv, sin 2πBv]``, (N, 512); 2π scales v before the product, as upstream."""
        # Always float32: under float16 autocast, phases of thousands of radians lose all meaning.
        with torch.autocast(projected.device.type, enabled=False):
            phase = (2 * math.pi * projected) @ self.b.T
            return torch.cat((torch.cos(phase), torch.sin(phase)), dim=-1)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.fourier_features(projected))


class GeoLocationEncoder(nn.Module):
    """GeoCLIP's location encoder: (lat, lon) degrees ``(N, 2)`` -> embeddings ``(N, 512)``.

    Built with seeded random weights; :meth:`load_official_weights` loads the pretrained ones
    shipped in the ``geoclip`` package. The Fourier matrices are buffers (``requires_grad`` False).
    """

    def __init__(self, sigmas: tuple[float, ...] = SIGMAS) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(RFF_SEED)
        self.branches = nn.ModuleList(FourierBranch(s, generator) for s in sigmas)

    def forward(self, latlon_deg: torch.Tensor) -> torch.Tensor:
        """Unnormalised location embeddings of (lat, lon) in degrees, shape ``(N, 512)``."""
        projected = equal_earth(latlon_deg.to(self.branches[0].b.dtype))
        out = self.branches[0](projected)
        for branch in self.branches[1:]:
            out = out + branch(projected)
        return out

    def load_official_weights(self, path: str | Path | None = None) -> GeoLocationEncoder:
        """Load ``geoclip/model/weights/location_encoder_weights.pth`` (MIT), strictly.

        ``path`` defaults to the file inside the installed ``geoclip`` package; nothing is
        downloaded. Raises ModelError when the package or the file is missing or does not fit.
        """
        path = Path(path) if path is not None else official_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a missing, truncated or foreign file: say which one
            raise ModelError(f"cannot read GeoCLIP weights {path}: {error}") from error
        try:
            self.load_state_dict(remap_official_keys(state), strict=True)
        except RuntimeError as error:
            raise ModelError(
                f"{path} does not fit GeoCLIP's location encoder (σ {self.sigmas}): {error}"
            ) from error
        return self

    @property
    def sigmas(self) -> tuple[float, ...]:
        return tuple(branch.sigma for branch in self.branches)


def official_weights_path() -> Path:
    """The location-encoder weights inside the installed ``geoclip`` package."""
    spec = find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the geoclip package is not installed; `pip install geoclip==1.3.0` "
            "(it ships GeoCLIP's pretrained location encoder)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS_FILE)
    if not path.is_file():
        raise ModelError(f"the geoclip package has no {'/'.join(WEIGHTS_FILE)}; reinstall it")
    return path


# Upstream names: LocEnc{i}.capsule.{0: rff, 1/3/5: linear layers}, LocEnc{i}.head.0 (last linear).
_OFFICIAL_KEY = re.compile(r"LocEnc(\d+)\.(capsule|head)\.(\d+)\.(\w+)")
_OFFICIAL_LAYER = {("capsule", 1): 0, ("capsule", 3): 2, ("capsule", 5): 4, ("head", 0): 6}


def remap_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's state-dict keys to :class:`GeoLocationEncoder`'s."""
    renamed = {}
    for key, tensor in state.items():
        match = _OFFICIAL_KEY.fullmatch(key)
        if match is None:
            raise ModelError(f"unexpected key {key!r} in the GeoCLIP location-encoder weights")
        branch, part, index, leaf = match[1], match[2], int(match[3]), match[4]
        if (part, index) == ("capsule", 0):
            renamed[f"branches.{branch}.b"] = tensor
        elif (part, index) in _OFFICIAL_LAYER:
            renamed[f"branches.{branch}.mlp.{_OFFICIAL_LAYER[part, index]}.{leaf}"] = tensor
        else:
            raise ModelError(f"unexpected key {key!r} in the GeoCLIP location-encoder weights")
    return renamed


class GeoclipModel(nn.Module):
    """GeoCLIP on a SW-CLIP backbone: frozen image features -> MLP head, GPS -> location encoder.

    As in GeoCLIP, an MLP (``feature_dim -> feature_dim -> 512``, ReLU) follows the frozen image
    encoder, and the image embedding is matched against location embeddings with a learned
    temperature (initialised to 1/0.07). The backbone is frozen; the head, the location encoder
    (pretrained weights when ``official_weights``) and ``logit_scale`` train.

    It offers what evaluation uses of a backbone (``image_features``, ``image_head``,
    ``cache_key``, ``preprocess``, ``logit_scale``, ``embed_dim``), and
    :meth:`embed_locations`, which replaces caption embedding when a gallery is built.
    """

    reads_captions = False  # whether encode_locations also takes the places' caption embeddings

    def __init__(self, backbone: nn.Module, *, official_weights: bool = True) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.feature_dim = int(backbone.feature_dim)
        self.embed_dim = LOCATION_DIM
        self.image_head = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim),
            nn.ReLU(),
            nn.Linear(self.feature_dim, LOCATION_DIM),
        )
        self.location_encoder = GeoLocationEncoder()
        if official_weights:
            self.location_encoder.load_official_weights()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.to(backbone.logit_scale.device)

    @property
    def preprocess(self):
        return self.backbone.preprocess

    @property
    def cache_key(self) -> str:
        """The backbone's: the frozen image features are exactly its own."""
        return self.backbone.cache_key

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features ``(B, feature_dim)`` (what the feature cache stores)."""
        return self.backbone.image_features(images)

    def feature_precision(self) -> str:
        """The backbone's (Backbone.feature_precision)."""
        return self.backbone.feature_precision()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, 512)``, not normalised."""
        return self.image_head(self.image_features(images))

    def encode_locations(
        self, latlon_deg: torch.Tensor, text: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Location embeddings ``(N, 512)`` of (lat, lon) degrees, not normalised (``text`` is
        for location branches that also read captions; this one does not)."""
        return self.location_encoder(latlon_deg)

    @torch.no_grad()
    def embed_locations(
        self, table: pd.DataFrame, device: torch.device, batch_size: int = 4096
    ) -> torch.Tensor:
        """L2-normalised location embeddings ``(N, 512)`` on the CPU of ``table.lat``/``.lon``."""
        was_training = self.training
        self.eval()
        latlon = torch.as_tensor(
            np.stack([table["lat"].to_numpy(float), table["lon"].to_numpy(float)], axis=1),
            dtype=torch.float32,
        )
        chunks = [
            F.normalize(self.encode_locations(latlon[i : i + batch_size].to(device)), dim=-1).cpu()
            for i in range(0, len(latlon), batch_size)
        ]
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone (which comes back from its own weights)."""
        return {
            k: v.detach().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("backbone.")
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state`'s dict; every GeoCLIP tensor must be present."""
        expected = set(self.trainable_state())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ModelError(
                "the checkpoint does not fit a GeoCLIP model on this backbone (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}); was it trained with another one?"
            )
        self.load_state_dict(state, strict=False)
