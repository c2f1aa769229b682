"""What the tests that run inside QGIS (pytest-qgis) share besides the ``provider`` fixture of
conftest.py: the bundled photos as a projected point layer, a stand-in backend environment, and
drawing a map to an image."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

from swclip_qgis.backend import REQUIRED_PACKAGES
from swclip_qgis.backend_setup import site_packages

from .conftest import PHOTOS

if TYPE_CHECKING:
    import geopandas as gpd


def photos_in_sweref99() -> gpd.GeoDataFrame:
    """The bundled photos as points in EPSG:3006 (SWEREF99 TM, so that every CRS step is
    exercised), with the image path in the field ``photo``."""
    import geopandas as gpd

    from swclip_core.data import read_samples

    samples = read_samples(PHOTOS)
    return gpd.GeoDataFrame(
        {"photo": samples["image_path"].astype(str).to_numpy()},
        geometry=samples.geometry.to_numpy(),
        crs="EPSG:4326",
    ).to_crs("EPSG:3006")


def stand_in_backend_venv(folder: Path) -> Path:
    """A venv in ``folder`` whose required packages (torch & co.) are empty stand-ins, and an empty
    requirements file beside it: Create backend environment completes it offline in seconds,
    through the same steps as a real one. Returns the requirements file."""
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(folder / "venv")],
        check=True,
    )
    site = site_packages(folder / "venv" / "bin" / "python")
    for name in REQUIRED_PACKAGES:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("", encoding="utf-8")
    requirements = folder / "requirements.txt"
    requirements.write_text("", encoding="utf-8")
    return requirements


def render(settings: QgsMapSettings, width: int, height: int, background: str = "white") -> QImage:
    """The map of ``settings`` drawn on a ``width`` x ``height`` image by QGIS's own renderer."""
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(background))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()
