"""Processing algorithm that checks the backend Python can run ``swclip_core``."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..backend import ENV_VAR, SETTING_KEY, BackendNotFound, find_backend


class CheckBackendAlgorithm(QgsProcessingAlgorithm):
    """``swclip:checkbackend``: find the backend Python and report its swclip_core version."""

    PYTHON = "PYTHON"
    VERSION = "VERSION"

    def tr(self, text: str) -> str:
        """Translate ``text`` in this algorithm's context."""
        return QCoreApplication.translate("CheckBackendAlgorithm", text)

    def createInstance(self) -> CheckBackendAlgorithm:
        return type(self)()

    def name(self) -> str:
        return "checkbackend"

    def displayName(self) -> str:
        return self.tr("Check backend")

    def group(self) -> str:
        return self.tr("Setup")

    def groupId(self) -> str:
        return "setup"

    def shortHelpString(self) -> str:
        return self.tr(
            "Finds the Python interpreter that runs SW-CLIP's models outside QGIS and checks "
            "that it can import swclip_core.\n\n"
            f"It uses, in this order: the QGIS setting '{SETTING_KEY}', the environment "
            f"variable {ENV_VAR}, or the .venv of the SW-CLIP source folder that holds this "
            "plugin (created by `make setup`).\n\n"
            "Outputs the interpreter's path and the swclip_core version. If no usable "
            "interpreter is found, the error says what was tried and how to fix it."
        )

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
