"""The plugin object QGIS creates: registers the Processing provider and removes it on unload."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsSettings
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .panel import SwclipDock
from .provider import ICON_PATH, SwclipProvider

DOCK_SEEN_KEY = "swclip/dock_seen"


class SwclipPlugin:
    """SW-CLIP for QGIS; every tool is a Processing algorithm of the ``swclip`` provider."""

    def __init__(self, iface: QgisInterface) -> None:
        self.iface = iface
        self.provider: SwclipProvider | None = None
        self.dock: SwclipDock | None = None
        self.action: QAction | None = None

    def initProcessing(self) -> None:
        """Register the provider (QGIS calls this alone for ``qgis_process``, headless)."""
        # initGui() also calls this; registering twice would duplicate every algorithm.
        if self.provider is None:
            self.provider = SwclipProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Set the plugin up in QGIS Desktop: Processing provider, dock panel, toolbar button."""
        self.initProcessing()
        if self.iface is None:  # a headless loader: Processing is all there is
            return
        self.dock = SwclipDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        # Shown at the first start only; afterwards QGIS restores it as the user left it.
        settings = QgsSettings()
        self.dock.setVisible(not settings.value(DOCK_SEEN_KEY, False, type=bool))
        settings.setValue(DOCK_SEEN_KEY, True)
        self.action = QAction(QIcon(str(ICON_PATH)), "SW-CLIP panel", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.iface.addToolBarIcon(self.action)

    def unload(self) -> None:
        """Remove everything initGui()/initProcessing() added."""
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.dock is not None:
            self.dock.cancel()
            self.iface.mainWindow().removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
