"""``swclip:localizelayer``: predict where every photo of a point layer was taken."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSink,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..layers import SAMPLE_ID, crs_argument, load_gpkg_layer
from .base import SwclipAlgorithm

POINTS_LAYER = "predicted_points"
LINES_LAYER = "error_lines"
SKIPPED_LAYER = "skipped_records"


class LocalizeLayerAlgorithm(SwclipAlgorithm):
    """Run ``swclip predict`` and return predicted points and error lines as layers."""

    ALGORITHM_NAME = "localizelayer"
    DISPLAY_NAME = "Localize layer"
    GROUP = "Localize"
    GROUP_ID = "localize"
    HELP = (
        "Predicts where each photo of a point layer was taken, with a model from Train model.\n\n"
        "Each photo is compared with the location captions of a gallery (by default the "
        "model's training locations; or a layer/CSV of candidate places). By default (mode) it "
        "is placed at the weighted mean of the heaviest group of its top-K candidates lying "
        "within the group radius (5 km) of one another; weighted: the weighted mean of all "
        "top-K; top1: the best candidate.\n\n"
        "Outputs, in the input layer's CRS and in one layer group per run: Predicted points "
        "(the input layer's own attributes, then the predicted position, error_m = distance to "
        "the layer's own position, uncertainty_m, confidence, the best caption, the top-K "
        "candidates and in_training: the photo (the same image, wherever the file lies) trained "
        "the model, so its error shows the fit, "
        "not the accuracy on new photos), Error lines (from each photo's position to its "
        "prediction) and, when "
        "asked for, Skipped records (features or photos that could not be used, with the "
        "reason).\n\n"
        "Fuse (advanced) mixes in an image-kNN model trained on the same photos: each photo "
        "also votes for the places of its most similar training photos (the gallery must "
        'then be the training locations; the README\'s "Choosing an objective" says where '
        "it helped). Without an image-kNN share the share is "
        "chosen by cross-validation on the model's training data (one to five more "
        "trainings the first time, then cached).\n\n"
        "Optional region polygons and named streets fill each photo's region and street "
        "where the layer has none (as `swclip predict --regions/--streets`), so captions and "
        "fairness figures name places.\n\n"
        "rank_of_truth is -1: a gallery of candidate places does not contain each "
        "photo's true location (Evaluate's closed protocol ranks it). When the input "
        "positions are unknown or approximate, error_m measures the distance to them.\n\n"
        "The log shows the `swclip predict` command that reproduces the run in a shell."
    )

    OUTPUT_POINTS = "OUTPUT_POINTS"
    OUTPUT_LINES = "OUTPUT_LINES"
    OUTPUT_SKIPPED = "OUTPUT_SKIPPED"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_photo_layer()
        self.add_model_folder()
        self.add_gallery()
        self.add_joins()
        self.add_retrieval()
        self.add_fusion()
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
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_SKIPPED,
                self.tr("Skipped records"),
                QgsProcessing.TypeVector,
                optional=True,
                createByDefault=False,
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
                *self.join_args(parameters, context, folder),
                *self.gallery_args(parameters, context),
                *self.retrieval_args(parameters, context),
                *self.fusion_args(parameters, context),
                *self.runtime_args(parameters, context),
            ],
            feedback,
        )  # fmt: skip
        group = self.output_group(parameters, context, follow_input=False)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        points = load_gpkg_layer(predictions, POINTS_LAYER)
        dest_id = self.copy_with_input_attributes(points, source, parameters, context, crs)
        self.style_when_loaded(context, dest_id, POINTS_LAYER, group)
        lines = load_gpkg_layer(predictions, LINES_LAYER)
        results = {
            self.OUTPUT_POINTS: dest_id,
            self.OUTPUT_LINES: self.copy_to_sink(
                lines, parameters, self.OUTPUT_LINES, context, crs
            ),
        }
        self.style_when_loaded(context, results[self.OUTPUT_LINES], LINES_LAYER, group)
        skipped = self.write_skipped(
            load_gpkg_layer(predictions, SKIPPED_LAYER), parameters, context
        )
        if skipped is not None:
            results[self.OUTPUT_SKIPPED] = skipped
            self.style_when_loaded(context, skipped, SKIPPED_LAYER, group)
        for name, value in results.items():
            shown = self.parameterDefinition(name).description()
            feedback.pushInfo(self.tr("{}: {}").format(shown, value))
        feedback.setProgress(100.0)
        return results

    def copy_with_input_attributes(
        self,
        points: QgsVectorLayer,
        source: Any,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        crs: Any,
    ) -> str:
        """The predicted points with the input feature's own attributes first (joined by
        sample_id, the input feature's id); input fields whose names the predictions use too
        are left out."""
        own = [f for f in source.fields() if points.fields().indexOf(f.name()) < 0
               and f.name().lower() != "fid"]  # fmt: skip
        fields = QgsFields()
        for field in own:
            fields.append(QgsField(field))
        for field in points.fields():
            if field.name().lower() != "fid":
                fields.append(QgsField(field))
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT_POINTS, context, fields, points.wkbType(), crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_POINTS))
        names = [f.name() for f in own]
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        request.setSubsetOfAttributes(names, source.fields())
        by_id = {str(f.id()): [f[name] for name in names] for f in source.getFeatures(request)}
        kept = [f.name() for f in points.fields() if f.name().lower() != "fid"]
        for point in points.getFeatures():
            feature = QgsFeature(fields)
            feature.setGeometry(point.geometry())
            carried = by_id.get(str(point[SAMPLE_ID]), [None] * len(names))
            feature.setAttributes(carried + [point[name] for name in kept])
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        return dest_id

    def write_skipped(
        self, backend_skips: QgsVectorLayer, parameters: dict[str, Any], context
    ) -> str | None:
        """The Skipped records table, when asked for: features the export left out (no
        geometry or image path) and records the backend skipped, each with its reason."""
        fields = QgsFields()
        fields.append(QgsField("record", QVariant.String))
        fields.append(QgsField("reason", QVariant.String))
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT_SKIPPED, context, fields, QgsWkbTypes.NoGeometry
        )
        if sink is None:  # not asked for
            return None
        rows = [(f"feature {fid}", reason) for fid, reason in self.export_report.skipped]
        rows += [(f["record"], f["reason"]) for f in backend_skips.getFeatures()]
        if not rows and context.willLoadLayerOnCompletion(dest_id):
            # An empty table in the run's group is clutter: written, but not loaded.
            to_load = context.layersToLoadOnCompletion()
            to_load.pop(dest_id, None)
            context.setLayersToLoadOnCompletion(to_load)
        for record, reason in rows:
            feature = QgsFeature(fields)
            feature.setAttributes([str(record), str(reason)])
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        return dest_id
