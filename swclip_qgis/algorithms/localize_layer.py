"""``swclip:localizelayer``: predict where every photo of a point layer was taken."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSink,
)

from ..layers import crs_argument, load_gpkg_layer
from .base import SwclipAlgorithm

POINTS_LAYER = "predicted_points"
LINES_LAYER = "error_lines"


class LocalizeLayerAlgorithm(SwclipAlgorithm):
    """Run ``swclip predict`` and return predicted points and error lines as layers."""

    ALGORITHM_NAME = "localizelayer"
    DISPLAY_NAME = "Localize layer"
    GROUP = "Localize"
    GROUP_ID = "localize"
    HELP = (
        "Predicts where each photo of a point layer was taken, with a model from Train model.\n\n"
        "Each photo is compared with the location captions of a gallery (by default the "
        "model's training locations; or a layer/CSV of candidate places) and placed at the "
        "weighted mean of its top-K matches (or at the best one).\n\n"
        "Outputs, in the input layer's CRS: Predicted points (predicted position, error_m = "
        "distance to the layer's own position, uncertainty_m, confidence, the best caption and "
        "the top-K candidates) and Error lines (from each photo's position to its prediction). "
        "When the input positions are unknown or approximate, error_m measures the distance "
        "to them."
    )

    OUTPUT_POINTS = "OUTPUT_POINTS"
    OUTPUT_LINES = "OUTPUT_LINES"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_photo_layer()
        self.add_model_folder()
        self.add_gallery()
        self.add_retrieval()
        self.add_runtime()
        self.add_run_name()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_POINTS, self.tr("Predicted points"), QgsProcessing.TypeVectorPoint
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_LINES, self.tr("Error lines"), QgsProcessing.TypeVectorLine
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        folder = self.work_dir()
        samples, crs = self.export_input(parameters, context, feedback, folder)
        predictions = folder / "predictions.gpkg"
        self.run_backend(
            "predict",
            [
                *self.input_args(samples),
                "--model", self.parameterAsFile(parameters, self.MODEL, context),
                "--out", predictions,
                "--out-crs", crs_argument(crs),
                *self.gallery_args(parameters, context),
                *self.retrieval_args(parameters, context),
                *self.runtime_args(parameters, context),
            ],
            feedback,
        )  # fmt: skip
        group = self.run_name(parameters, context)
        results = {}
        for output, layer_name in (
            (self.OUTPUT_POINTS, POINTS_LAYER),
            (self.OUTPUT_LINES, LINES_LAYER),
        ):
            layer = load_gpkg_layer(predictions, layer_name)
            dest_id = self.copy_to_sink(layer, parameters, output, context, crs)
            self.style_when_loaded(context, dest_id, layer_name, group)
            results[output] = dest_id
        return results
