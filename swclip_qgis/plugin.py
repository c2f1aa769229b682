"""The plugin object QGIS creates: registers the Processing provider and removes it on unload."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.gui import QgisInterface

from .provider import SwclipProvider


class SwclipPlugin:
    """SW-CLIP for QGIS; every tool is a Processing algorithm of the ``swclip`` provider."""

    def __init__(self, iface: QgisInterface) -> None:
        self.iface = iface
        self.provider: SwclipProvider | None = None

    def initProcessing(self) -> None:
        """Register the provider (QGIS calls this alone for ``qgis_process``, headless)."""
        # initGui() also calls this; registering twice would duplicate every algorithm.
        if self.provider is None:
            self.provider = SwclipProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Set the plugin up in QGIS Desktop."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove everything initGui()/initProcessing() added."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
