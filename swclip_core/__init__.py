"""SW-CLIP: spatially-weighted CLIP for street-view geo-localization.

The library behind the ``swclip`` command and the QGIS plugin. Nothing here imports QGIS.
"""

__version__ = "0.1.0"
