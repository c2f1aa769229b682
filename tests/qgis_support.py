"""Drawing a map to an image, for the tests that run inside QGIS (pytest-qgis); their shared
``provider`` fixture is in conftest.py."""

from __future__ import annotations

from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage


def render(settings: QgsMapSettings, width: int, height: int, background: str = "white") -> QImage:
    """The map of ``settings`` drawn on a ``width`` x ``height`` image by QGIS's own renderer."""
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(background))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()
