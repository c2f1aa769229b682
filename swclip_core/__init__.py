"""SW-CLIP: spatially-weighted CLIP for street-view geo-localization.

The library behind the ``swclip`` command and the QGIS plugin (:mod:`swclip_core.api`, re-exported
here). Nothing here imports QGIS, and importing this package does not load torch.
"""

from .api import (
    Joins,
    Model,
    build_gallery,
    embed_gallery,
    evaluate,
    load_model,
    localize,
    read_locations,
    read_predictions,
    read_samples,
    train,
    write_predictions,
    zero_shot_model,
)
from .config import SpatialKernel, TrainConfig

__version__ = "0.1.0"

__all__ = [
    "Joins",
    "Model",
    "SpatialKernel",
    "TrainConfig",
    "__version__",
    "build_gallery",
    "embed_gallery",
    "evaluate",
    "load_model",
    "localize",
    "read_locations",
    "read_predictions",
    "read_samples",
    "train",
    "write_predictions",
    "zero_shot_model",
]
