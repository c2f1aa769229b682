"""``swclip:errorsurface``: the prediction errors interpolated into a raster (IDW)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterDestination,
    QgsUnitTypes,
)

from ..layers import crs_argument
from ..vector_io import export_layer
from .base import EXPORT_SHARE, SwclipAlgorithm

REQUIRED = ("true_lat", "true_lon", "error_m")
STYLE = "error_surface"
NODATA = -9999.0  # swclip_core.surface.NODATA


def warp(source: Path, target: Path, wkt: str) -> None:
    """Reproject a GeoTIFF to the CRS ``wkt`` (nearest neighbour: the errors keep their values).

    GDAL's own Python bindings, which every QGIS installation has (its raster tools use them).
    """
    from osgeo import gdal

    # The return value, not gdal.UseExceptions(): that would change GDAL for all of QGIS.
    dataset = gdal.Warp(str(target), str(source), dstSRS=wkt, resampleAlg="near",
                        dstNodata=NODATA, creationOptions=["COMPRESS=DEFLATE"])  # fmt: skip
    if dataset is None:
        raise QgsProcessingException(
            f"cannot reproject the error surface to the layer's CRS: {gdal.GetLastErrorMsg()}"
        )
    dataset = None  # closes and flushes the file


class ErrorSurfaceAlgorithm(SwclipAlgorithm):
    """Run ``swclip surface`` on a predictions layer and return the GeoTIFF."""

    ALGORITHM_NAME = "errorsurface"
    DISPLAY_NAME = "Error surface raster"
    GROUP = "Results"
    GROUP_ID = "results"
    HELP = (
        "Interpolates the localization error (error_m) between the photos' true positions "
        "into a raster, to see where a model does well or badly.\n\n"
        "Input: a predictions layer such as Localize layer's Predicted points (fields "
        "true_lat, true_lon, error_m). Each cell is the inverse-distance-weighted mean "
        "(weights 1/d^power) of the errors of its 12 nearest photos; cells farther than the "
        "maximum distance from every photo are nodata. The raster is in the predictions "
        "layer's CRS (interpolated in the local UTM zone and warped to it when that CRS is in "
        "degrees). It is styled "
        "in the classes of the predicted points and joins the predictions' layer group.\n\n"
        "Cell size 0 and maximum distance 0 mean automatic: a quarter of, and three times, the "
        "median spacing between photos."
    )

    CELL_M = "CELL_M"
    POWER = "POWER"
    MAX_DISTANCE_M = "MAX_DISTANCE_M"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_predictions_layer()
        self.add_metres(self.CELL_M, "Cell size in metres (0: automatic)", 0.0)
        self.add_metres(self.POWER, "IDW power", 2.0, minimum=0.1, advanced=True)
        self.add_metres(
            self.MAX_DISTANCE_M,
            "Maximum distance from a photo in metres (0: automatic)",
            0.0,
            advanced=True,
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Error surface"))
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        source = self.predictions_source(parameters, context, REQUIRED)
        out = Path(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        if out.suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(
                self.tr("The error surface is written as GeoTIFF: choose a file ending in .tif.")
            )
        folder = self.work_dir()
        exported = folder / "predictions.gpkg"
        try:
            export_layer(
                source, exported, "predictions", feedback=feedback, progress_share=EXPORT_SHARE
            )
        except OSError as error:
            raise QgsProcessingException(str(error)) from None
        crs = source.sourceCrs()
        # The backend interpolates in metres: a layer in degrees gets a UTM raster first, warped
        # to the layer's CRS afterwards.
        in_metres = not crs.isGeographic() and crs.mapUnits() == QgsUnitTypes.DistanceMeters
        written = out if in_metres else folder / "surface_metres.tif"
        power = self.parameterAsDouble(parameters, self.POWER, context)
        args: list[Any] = [exported, "--layer", "predictions", "--out", written,
                           "--crs", crs_argument(crs), "--power", power]  # fmt: skip
        for name, option in ((self.CELL_M, "--cell-m"), (self.MAX_DISTANCE_M, "--max-distance-m")):
            value = self.parameterAsDouble(parameters, name, context)
            if value > 0:
                args += [option, value]
        out.parent.mkdir(parents=True, exist_ok=True)
        self.run_backend("surface", args, feedback)
        if written != out:
            warp(written, out, crs.toWkt())
        group = self.output_group(parameters, context, follow_input=True)
        self.style_when_loaded(context, str(out), STYLE, group)
        return {self.OUTPUT: str(out)}
