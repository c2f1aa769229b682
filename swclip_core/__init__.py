"""SW-CLIP: spatially-weighted CLIP for street-view geo-localization.

The library behind the ``swclip`` command and the QGIS plugin. Its functions
(:mod:`swclip_core.api`: ``read_samples``, ``train``, ``load_model``, ``localize``, ``evaluate``,
``build_gallery``...) and settings (``TrainConfig``) are available from here; they load on first
use, so ``import swclip_core`` itself (the plugin's backend check does it) needs no third-party
package. Nothing here imports QGIS.
"""

from typing import Any

__version__ = "0.1.0"

_FROM_API = (
    "Joins",
    "Model",
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
)
_FROM_CONFIG = ("SpatialKernel", "TrainConfig")

__all__ = ["__version__", *_FROM_API, *_FROM_CONFIG]


def __getattr__(name: str) -> Any:
    if name in _FROM_API or name in _FROM_CONFIG:
        from importlib import import_module

        module = import_module(f".{'api' if name in _FROM_API else 'config'}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
