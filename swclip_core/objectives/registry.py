"""Every training objective, by name, in menu order: the one list that the command line's choices
and help, the plugin's menu (checked by a test), the benchmark rows and
:meth:`~swclip_core.config.TrainConfig.validate` read. New objectives go at the end: a QGIS
Processing model stores a menu choice by its position.

Adding an objective is a new module in this package (a subclass of
:class:`~swclip_core.objectives.base.Objective`, instantiated as ``OBJECTIVE``) and one line here;
CONTRIBUTING.md walks through an example. Modules are named, not imported: reading the list costs
nothing, and an objective's own imports (torch...) load only when it is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, NamedTuple

from ..errors import InputError

if TYPE_CHECKING:
    from .base import Objective


class Listing(NamedTuple):
    module: str  # where the objective's OBJECTIVE lives
    summary: str  # one line for `swclip train --help`
    # For the objectives that are a location encoder crossed with a loss (--location-encoder,
    # --loss): which ones; None for the others.
    encoder: str | None = None
    loss: str | None = None


LOCATION_ENCODERS = ("text", "gps", "hybrid")  # captions, GeoCLIP's GPS encoder, both
LOSSES = ("sw", "infonce")  # spatial soft labels (+ neighbourhood, fairness), one-hot InfoNCE


REGISTRY: dict[str, Listing] = {
    "swclip": Listing(
        "swclip_core.objectives.swclip",
        "location captions with spatial soft labels + neighbourhood + fairness terms",
        "text",
        "sw",
    ),
    "clip": Listing(
        "swclip_core.objectives.clip", "plain InfoNCE on location captions", "text", "infonce"
    ),
    "semivariogram": Listing(
        "swclip_core.objectives.semivariogram",
        "InfoNCE with negatives re-weighted by a fitted embedding semivariogram "
        "(semivariogram.json/.png in the run folder)",
    ),
    "image-knn": Listing(
        "swclip_core.objectives.image_knn",
        "no training, the training images' frozen features are the gallery",
    ),
    "geoclip": Listing(
        "swclip_core.objectives.geoclip",
        "GeoCLIP's pretrained GPS encoder with a GPS queue, one-hot InfoNCE",
        "gps",
        "infonce",
    ),
    "swgeo": Listing(
        "swclip_core.objectives.swgeo",
        "GeoCLIP's pretrained GPS encoder and queue with the swclip loss",
        "gps",
        "sw",
    ),
    "hybrid": Listing(
        "swclip_core.objectives.hybrid",
        "captions and GPS together (text tower + GeoCLIP's GPS encoder) with the swclip loss "
        "and a GPS queue",
        "hybrid",
        "sw",
    ),
    "hybrid-infonce": Listing(
        "swclip_core.objectives.hybrid_infonce",
        "the hybrid encoder with GeoCLIP's one-hot InfoNCE and queue",
        "hybrid",
        "infonce",
    ),
}


def objective_for(encoder: str, loss: str) -> str:
    """The objective that trains ``encoder`` with ``loss`` (:data:`LOCATION_ENCODERS` ×
    :data:`LOSSES`); InputError when none does."""
    for name, listing in REGISTRY.items():
        if (listing.encoder, listing.loss) == (encoder, loss):
            return name
    raise InputError(
        f"no objective trains location encoder {encoder!r} with loss {loss!r}; choose "
        f"--location-encoder from {LOCATION_ENCODERS} and --loss from {LOSSES}"
    )


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``, its module imported now; InputError naming the
    choices when there is none."""
    if name not in REGISTRY:
        raise InputError(f"unknown objective {name!r}; choose one of {tuple(REGISTRY)}")
    return import_module(REGISTRY[name].module).OBJECTIVE
