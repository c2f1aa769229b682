"""Processing algorithm that checks the backend Python can run ``swclip_core``."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
)

from ..backend import ENV_VAR, SETTING_KEY, BackendNotFound, find_backend
from .base import SwclipAlgorithm


class CheckBackendAlgorithm(SwclipAlgorithm):
    """``swclip:checkbackend``: find the backend Python and report its swclip_core version."""

    ALGORITHM_NAME = "checkbackend"
    DISPLAY_NAME = "Check backend"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP = (
        "Finds the Python interpreter that runs SW-CLIP's models outside QGIS and checks "
        "that it can import swclip_core.\n\n"
        f"It uses, in this order: the QGIS setting '{SETTING_KEY}' (also on the SW-CLIP page "
        f"of Settings > Options > Processing > Providers), the environment variable {ENV_VAR}, "
        "then, for an installed plugin, the environment that Create backend environment makes "
        "in the QGIS profile, or, in a source checkout, its .venv (created by `make setup`)."
        "\n\n"
        "Outputs the interpreter's path and the swclip_core version. If no usable "
        "interpreter is found, the error says what was tried and how to fix it."
    )

    PYTHON = "PYTHON"
    VERSION = "VERSION"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addOutput(QgsProcessingOutputString(self.PYTHON, self.tr("Backend Python")))
        self.addOutput(QgsProcessingOutputString(self.VERSION, self.tr("swclip_core version")))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, str]:
        try:
            backend = find_backend()
        except BackendNotFound as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(self.tr("Backend Python: {}").format(backend.python))
        feedback.pushInfo(self.tr("swclip_core version: {}").format(backend.version))
        return {self.PYTHON: backend.python, self.VERSION: backend.version}
