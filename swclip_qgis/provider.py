"""The SW-CLIP Processing provider: groups the plugin's algorithms in the Processing toolbox."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import options
from .algorithms.build_gallery import BuildGalleryAlgorithm
from .algorithms.check_backend import CheckBackendAlgorithm
from .algorithms.create_backend import CreateBackendAlgorithm
from .algorithms.error_lines import ErrorLinesAlgorithm
from .algorithms.error_surface import ErrorSurfaceAlgorithm
from .algorithms.evaluate_model import EvaluateAlgorithm
from .algorithms.fairness_choropleth import FairnessChoroplethAlgorithm
from .algorithms.localize_layer import LocalizeLayerAlgorithm
from .algorithms.train_model import TrainModelAlgorithm

ICON_PATH = Path(__file__).resolve().parent / "icon.svg"


class SwclipProvider(QgsProcessingProvider):
    """Provider ``swclip`` ("SW-CLIP")."""

    def id(self) -> str:
        return "swclip"

    def name(self) -> str:
        return "SW-CLIP"

    def longName(self) -> str:
        return "SW-CLIP: street-view geo-localization"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:
        return str(ICON_PATH)

    def load(self) -> bool:
        options.register(self.icon())
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        options.unregister()

    def loadAlgorithms(self) -> None:
        for algorithm in (
            CheckBackendAlgorithm(),
            CreateBackendAlgorithm(),
            TrainModelAlgorithm(),
            LocalizeLayerAlgorithm(),
            EvaluateAlgorithm(),
            BuildGalleryAlgorithm(),
            ErrorLinesAlgorithm(),
            FairnessChoroplethAlgorithm(),
            ErrorSurfaceAlgorithm(),
        ):
            self.addAlgorithm(algorithm)
