"""``swclip:errorlines``: true → predicted lines from a predictions layer, in QGIS alone."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSink,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .base import SwclipAlgorithm

COORDINATES = ("true_lat", "true_lon", "pred_lat", "pred_lon")
REQUIRED = (*COORDINATES, "error_m")
# The attributes the lines carry, as the CLI's error_lines layer (those the input has).
CARRIED = ("sample_id", "error_m", *COORDINATES, "region", "in_training")
STYLE = "error_lines"


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, QVariant) and value.isNull())


class ErrorLinesAlgorithm(SwclipAlgorithm):
    """Lines from each sample's true position to its predicted one, styled by error."""

    ALGORITHM_NAME = "errorlines"
    DISPLAY_NAME = "Error lines"
    GROUP = "Results"
    GROUP_ID = "results"
    HELP = (
        "Draws a line from each photo's true position to its predicted position, from a "
        "predictions layer such as Localize layer's Predicted points (fields true_lat, "
        "true_lon, pred_lat, pred_lon in WGS 84 degrees and error_m).\n\n"
        "The lines are in the predictions layer's CRS and keep error_m, the geodesic error in "
        "metres computed by the model's run (not the length of the line in the map's CRS). "
        "They are styled by error. Features with a missing coordinate or error are skipped and "
        "counted in the log.\n\n"
        "Runs inside QGIS; no backend is needed."
    )

    OUTPUT = "OUTPUT"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_predictions_layer()
        self.add_run_name()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, self.tr("Error lines"), QgsProcessing.TypeVectorLine
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        source = self.predictions_source(parameters, context, REQUIRED)
        source_fields = source.fields()
        fields = QgsFields()
        carried = [name for name in CARRIED if source_fields.indexOf(name) >= 0]
        for name in carried:
            fields.append(source_fields.field(name))
        crs = source.sourceCrs()
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.LineString, crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        to_layer = QgsCoordinateTransform(
            QgsCoordinateReferenceSystem("EPSG:4326"), crs, context.transformContext()
        )
        total = max(source.featureCount(), 1)
        written, skipped = 0, 0
        for number, feature in enumerate(source.getFeatures()):
            if feedback.isCanceled():
                break
            feedback.setProgress(100.0 * number / total)
            values = [feature[name] for name in REQUIRED]
            if any(is_null(value) for value in values):
                skipped += 1
                continue
            true_lat, true_lon, pred_lat, pred_lon, _error = (float(v) for v in values)
            try:
                ends = [
                    to_layer.transform(QgsPointXY(true_lon, true_lat)),
                    to_layer.transform(QgsPointXY(pred_lon, pred_lat)),
                ]
            except QgsCsException:
                skipped += 1
                continue
            line = QgsFeature(fields)
            line.setGeometry(QgsGeometry.fromPolylineXY(ends))
            line.setAttributes([feature[name] for name in carried])
            sink.addFeature(line, QgsFeatureSink.FastInsert)
            written += 1
        feedback.pushInfo(
            self.tr("{} error lines ({} features skipped: a coordinate or error_m missing)").format(
                written, skipped
            )
        )
        group = self.output_group(parameters, context, follow_input=True)
        self.style_when_loaded(context, dest_id, STYLE, group)
        return {self.OUTPUT: dest_id}
