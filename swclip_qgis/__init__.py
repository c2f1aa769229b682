"""SW-CLIP QGIS plugin.

Imports only qgis, qgis.PyQt and the standard library: the models run in a separate backend
Python (see backend.py), never in QGIS's interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qgis.gui import QgisInterface

    from .plugin import SwclipPlugin


def classFactory(iface: QgisInterface) -> SwclipPlugin:
    """Entry point QGIS calls to create the plugin."""
    from .plugin import SwclipPlugin

    return SwclipPlugin(iface)
