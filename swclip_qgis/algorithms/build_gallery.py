"""``swclip:buildgallery``: candidate locations (with captions) for Localize layer and Evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsWkbTypes,
)

from ..files import staged
from ..layers import load_gpkg_layer
from ..vector_io import copy_transformed, export_layer
from .base import EXPORT_SHARE, SwclipAlgorithm

# (label, worker option, geometry the layer must hold)
SOURCES = (
    ("Photos of the input layer (point layer with an image field)", "--from-input", "point"),
    ("Points every N metres along lines (e.g. streets)", "--lines", "line"),
    ("Grid of points every N metres inside polygons", "--grid", "polygon"),
    ("Points of a point layer (e.g. addresses, places)", "--points", "point"),
)
GEOMETRY_TYPES = {
    "point": QgsWkbTypes.PointGeometry,
    "line": QgsWkbTypes.LineGeometry,
    "polygon": QgsWkbTypes.PolygonGeometry,
}
GALLERY_LAYER = "gallery"


class BuildGalleryAlgorithm(SwclipAlgorithm):
    """Run ``swclip gallery`` on a layer and return the gallery points in the layer's CRS."""

    ALGORITHM_NAME = "buildgallery"
    DISPLAY_NAME = "Build gallery"
    GROUP = "Localize"
    GROUP_ID = "localize"
    HELP = (
        "Makes a gallery: the candidate locations (each with its location caption) among which "
        "Localize layer and Evaluate (open protocol) place photos.\n\n"
        "Sources: the photos of a point layer (their own positions; choose the image field), "
        "a point every N metres along lines (the name field fills the street), a grid of "
        "points every N metres inside polygons (the name field fills the city), or the points "
        "of any point layer (fields street, city and country are used when present).\n\n"
        "With a trained model folder the captions are embedded once now and cached, so "
        "localizing against this gallery later starts at once.\n\n"
        "Outputs: the gallery points in the source layer's CRS, and the gallery file to give "
        "to Localize layer or Evaluate as their gallery."
    )

    SOURCE = "SOURCE"
    SPACING_M = "SPACING_M"
    NAME_FIELD = "NAME_FIELD"
    OUTPUT = "OUTPUT"
    GALLERY_FILE = "GALLERY_FILE"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SOURCE,
                self.tr("Gallery from"),
                options=[self.tr(label) for label, _, _ in SOURCES],
                defaultValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT,
                self.tr("Source layer (points, lines or polygons, as chosen above)"),
                [QgsProcessing.TypeVectorAnyGeometry],
            )
        )
        self.add_metres(self.SPACING_M, "Spacing in metres (lines and grid)", 25.0, minimum=0.1)
        self.addParameter(
            QgsProcessingParameterField(
                self.NAME_FIELD,
                self.tr("Name field (street name of lines, city name of polygons)"),
                parentLayerParameterName=self.INPUT,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.IMAGE_FIELD,
                self.tr("Image path field (photos only)"),
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.String,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                self.tr("Trained model folder (embeds the gallery now; optional)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.add_runtime()
        self.add_run_name()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, self.tr("Gallery points"), QgsProcessing.TypeVectorPoint
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.GALLERY_FILE,
                self.tr("Gallery file (for Localize layer / Evaluate)"),
                fileFilter="GeoPackage (*.gpkg)",
                defaultValue=QgsProcessing.TEMPORARY_OUTPUT,
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        label, option, geometry = SOURCES[self.parameterAsEnum(parameters, self.SOURCE, context)]
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        if QgsWkbTypes.geometryType(source.wkbType()) != GEOMETRY_TYPES[geometry]:
            raise QgsProcessingException(
                self.tr("'{}' needs a {} layer; the source layer holds {} geometries.").format(
                    label, geometry, QgsWkbTypes.geometryDisplayString(
                        QgsWkbTypes.geometryType(source.wkbType())
                    )
                )
            )  # fmt: skip
        folder = self.work_dir()
        args: list[Any] = []
        if option == "--from-input":
            if not self.parameterAsString(parameters, self.IMAGE_FIELD, context):
                raise QgsProcessingException(
                    self.tr("A gallery from photos needs the image path field: choose it.")
                )
            samples, _crs = self.export_input(parameters, context, feedback, folder)
            args += [option, samples, "--layer", "samples"]
        else:
            exported = folder / "source.gpkg"
            try:
                count = export_layer(
                    source, exported, "source", feedback=feedback, progress_share=EXPORT_SHARE
                )
            except OSError as error:
                raise QgsProcessingException(str(error)) from None
            if count == 0:
                raise QgsProcessingException(self.tr("The source layer has no feature."))
            args += [option, exported, "--layer", "source"]
            if option in ("--lines", "--grid"):
                args += ["--spacing-m", self.parameterAsDouble(parameters, self.SPACING_M, context)]
            name_field = self.parameterAsString(parameters, self.NAME_FIELD, context)
            if name_field and option != "--points":
                args += ["--name-field", name_field]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model:
            args += ["--model", model, *self.runtime_args(parameters, context)]
        written = folder / "gallery.gpkg"
        self.run_backend("gallery", ["--out", written, *args], feedback)

        gallery_file = Path(self.parameterAsFileOutput(parameters, self.GALLERY_FILE, context))
        with staged(gallery_file) as partial:
            shutil.copyfile(written, partial)

        layer = load_gpkg_layer(gallery_file, GALLERY_LAYER)
        crs = source.sourceCrs()
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, layer.fields(), layer.wkbType(), crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        count = copy_transformed(layer, sink, crs, context)
        feedback.pushInfo(self.tr("{} gallery locations").format(count))
        if context.willLoadLayerOnCompletion(dest_id):
            group = self.output_group(parameters, context, follow_input=False)
            self.style_when_loaded(context, dest_id, GALLERY_LAYER, group)
        return {self.OUTPUT: dest_id, self.GALLERY_FILE: str(gallery_file)}
