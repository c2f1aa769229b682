"""Every training objective, by name, in menu order (the default first): the one list that the
command line's choices and help, the plugin's menu (checked by a test), the benchmark rows and
:meth:`~swclip_core.config.TrainConfig.validate` read.

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


REGISTRY: dict[str, Listing] = {
    "swclip": Listing(
        "swclip_core.objectives.swclip", "spatial soft labels + neighbourhood + fairness terms"
    ),
    "clip": Listing("swclip_core.objectives.clip", "plain InfoNCE on location captions"),
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
        "swclip_core.objectives.geoclip", "GeoCLIP's pretrained GPS encoder with a GPS queue"
    ),
}


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``, its module imported now; InputError naming the
    choices when there is none."""
    if name not in REGISTRY:
        raise InputError(f"unknown objective {name!r}; choose one of {tuple(REGISTRY)}")
    return import_module(REGISTRY[name].module).OBJECTIVE
