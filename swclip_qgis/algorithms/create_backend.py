"""``swclip:createbackend``: create the Python environment that runs SW-CLIP's models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from ..backend import SETTING_KEY, BackendNotFound, default_backend_dir
from ..backend_setup import create_backend
from ..runner import WorkerFailed
from .base import SwclipAlgorithm


class CreateBackendAlgorithm(SwclipAlgorithm):
    """Create a venv with swclip_core's requirements and make it the plugin's backend."""

    ALGORITHM_NAME = "createbackend"
    DISPLAY_NAME = "Create backend environment"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP = (
        "Creates the Python environment in which SW-CLIP's models run (outside QGIS's own "
        "Python, so QGIS never loads torch): a virtual environment with access to the "
        "system's packages, into which pip installs the pinned requirements of the "
        "swclip_core bundled with this plugin (torch, open_clip, geopandas ...; several GB, "
        "about 6 GB on Linux, where the package index's torch is the CUDA build; downloaded "
        "from the package index, so this can take several minutes).\n\n"
        f"When it is done, the QGIS setting '{SETTING_KEY}' points at the new environment's "
        "Python and every SW-CLIP algorithm uses it. Running it again completes or updates "
        "an existing environment. pip's output is shown in the log."
    )

    BASE_PYTHON = "BASE_PYTHON"
    REQUIREMENTS = "REQUIREMENTS"
    OUTPUT = "OUTPUT"
    PYTHON = "PYTHON"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                self.OUTPUT,
                self.tr("Environment folder"),
                defaultValue=str(default_backend_dir()),
            )
        )
        self.add_advanced(
            QgsProcessingParameterFile(
                self.BASE_PYTHON,
                self.tr("Base Python 3.10+ to create it from (empty: found automatically)"),
                optional=True,
                fileFilter="All files (*)",  # interpreters have no extension outside Windows
            )
        )
        self.add_advanced(
            QgsProcessingParameterFile(
                self.REQUIREMENTS,
                self.tr("Requirements file (empty: the bundled requirements.txt)"),
                optional=True,
                fileFilter="Requirements (*.txt)",
            )
        )
        self.addOutput(QgsProcessingOutputString(self.PYTHON, self.tr("Backend Python")))

    def checkParameterValues(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        # Processing refuses a missing destination even when it has a default, so
        # processing.run("swclip:createbackend", {}) would fail; the profile's folder is meant.
        default = {self.OUTPUT: self.parameterDefinition(self.OUTPUT).defaultValue()}
        return super().checkParameterValues({**default, **parameters}, context)

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        venv_dir = Path(self.parameterAsString(parameters, self.OUTPUT, context))
        base = self.parameterAsFile(parameters, self.BASE_PYTHON, context) or None
        requirements = self.parameterAsFile(parameters, self.REQUIREMENTS, context) or None
        try:
            info = create_backend(
                venv_dir,
                feedback,
                base=base,
                requirements=Path(requirements) if requirements else None,
            )
        except (WorkerFailed, BackendNotFound, OSError) as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(
            self.tr("Backend ready: {} (swclip_core {})").format(info.python, info.version)
        )
        return {self.OUTPUT: str(venv_dir), self.PYTHON: info.python}
