"""``swclip:fairnesschoropleth``: how well each region's photos were localized, as a map."""

from __future__ import annotations

import math
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsSpatialIndex,
)
from qgis.PyQt.QtCore import QVariant

from ..fairness import Fairness, is_unknown, region_fairness
from .base import SwclipAlgorithm
from .error_lines import is_null

STYLE = "region_choropleth"
FIGURES = (
    ("n", QVariant.Int),
    ("median_error_m", QVariant.Double),
    ("mean_error_m", QVariant.Double),
    ("acc_at_radius", QVariant.Double),
    ("r_at_1", QVariant.Double),
    ("median_error_ratio", QVariant.Double),
    ("median_error_diff_m", QVariant.Double),
)
# Numeric outputs: the disparity across regions (swclip_core.metrics.region_fairness) and context.
DISPARITY = (
    ("MEDIAN_ERROR_MAX_MIN_RATIO", "Largest / smallest regional median error"),
    ("MEDIAN_ERROR_CV", "Coefficient of variation of the regional median errors"),
    ("MEAN_ERROR_GINI", "Gini coefficient of the regional mean errors"),
    ("OVERALL_MEDIAN_ERROR_M", "Median error of all predictions (m)"),
    ("REGIONS_WITH_SAMPLES", "Regions holding at least one sample"),
    ("SAMPLES_WITHOUT_REGION", "Samples outside every region"),
)


def _number(value: float) -> float | None:
    """NaN becomes NULL in the attribute table."""
    return None if math.isnan(value) else value


class FairnessChoroplethAlgorithm(SwclipAlgorithm):
    """Per-region error figures on the region polygons, and their disparity."""

    ALGORITHM_NAME = "fairnesschoropleth"
    DISPLAY_NAME = "Region fairness choropleth"
    GROUP = "Results"
    GROUP_ID = "results"
    HELP = (
        "Shows how evenly a model localizes photos across regions (districts, cities, "
        "countries...).\n\n"
        "Each photo of the predictions layer (Predicted points of Localize layer) belongs to "
        "the region named in its 'region' field when it has one, else to the first polygon "
        "that contains its TRUE position. For every polygon: n, the median and mean error "
        "(m), the share of errors within the radius, R@1 (when the predictions carry "
        "rank_of_truth, i.e. the closed protocol), and the deviation of the regional median "
        "from the overall median (ratio and difference in metres). Polygons without photos "
        "keep n = 0 and empty figures; polygons sharing a name share the figures.\n\n"
        "Disparity figures (outputs and log): largest / smallest regional median, its "
        "coefficient of variation, and the Gini coefficient of the regional mean errors "
        "(0 = all regions alike).\n\n"
        "The output is in the region layer's CRS, styled as a graduated choropleth of the "
        "median error. Runs inside QGIS; no backend is needed."
    )

    REGIONS = "REGIONS"
    REGION_FIELD = "REGION_FIELD"
    RADIUS_M = "RADIUS_M"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_predictions_layer()
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.REGIONS, self.tr("Region polygons"), [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.REGION_FIELD,
                self.tr("Region name field"),
                parentLayerParameterName=self.REGIONS,
            )
        )
        self.add_metres(
            self.RADIUS_M,
            "Accuracy radius in metres (share of errors within it)",
            1000.0,
            advanced=True,
        )
        self.add_run_name()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, self.tr("Region choropleth"), QgsProcessing.TypeVectorPolygon
            )
        )
        for name, description in DISPARITY:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(description)))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        predictions = self.parameterAsSource(parameters, self.INPUT, context)
        if predictions is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        regions = self.parameterAsSource(parameters, self.REGIONS, context)
        if regions is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.REGIONS))
        name_field = self.parameterAsString(parameters, self.REGION_FIELD, context)
        radius_m = self.parameterAsDouble(parameters, self.RADIUS_M, context)
        if predictions.fields().indexOf("error_m") < 0:
            raise QgsProcessingException(
                self.tr(
                    "The predictions layer has no error_m field: a choropleth needs photos "
                    "with known positions (use Localize layer's Predicted points)."
                )
            )

        polygons = [(f[name_field], f.geometry()) for f in regions.getFeatures()]
        labels = self.sample_labels(predictions, polygons, regions.sourceCrs(), context)
        samples = []
        has_rank = predictions.fields().indexOf("rank_of_truth") >= 0
        for feature, label in zip(predictions.getFeatures(), labels, strict=True):
            error = feature["error_m"]
            error = math.nan if is_null(error) else float(error)
            hit = None
            if has_rank and not is_null(feature["rank_of_truth"]):
                rank = int(feature["rank_of_truth"])
                hit = rank == 0 if rank >= 0 else None
            samples.append((label, error, hit))
        figures = region_fairness(samples, radius_m)

        dest_id = self.write_choropleth(parameters, context, regions, polygons, name_field, figures)
        names = {"" if is_unknown(name) else str(name) for name, _ in polygons} - {""}
        matched = [name for name in figures.regions if name in names]
        scored = sum(1 for _, error, _ in samples if math.isfinite(error))
        results: dict[str, Any] = {
            self.OUTPUT: dest_id,
            "MEDIAN_ERROR_MAX_MIN_RATIO": figures.median_error_max_min_ratio,
            "MEDIAN_ERROR_CV": figures.median_error_cv,
            "MEAN_ERROR_GINI": figures.mean_error_gini,
            "OVERALL_MEDIAN_ERROR_M": figures.overall_median_error_m,
            "REGIONS_WITH_SAMPLES": len(matched),
            "SAMPLES_WITHOUT_REGION": scored - sum(figures.regions[n].n for n in matched),
        }
        for name, description in DISPARITY:
            feedback.pushInfo(f"{description}: {results[name]:.4g}")
        group = self.output_group(parameters, context, follow_input=True)
        self.style_when_loaded(context, dest_id, STYLE, group)
        return results

    def sample_labels(
        self,
        predictions: Any,
        polygons: list[tuple[Any, QgsGeometry]],
        regions_crs: QgsCoordinateReferenceSystem,
        context: QgsProcessingContext,
    ) -> list[Any]:
        """Each prediction's region: its 'region' field when any is filled, else the first
        polygon containing its true position (None outside every polygon)."""
        fields = predictions.fields()
        if fields.indexOf("region") >= 0:
            given = [f["region"] for f in predictions.getFeatures()]
            given = [None if is_null(label) else label for label in given]
            if any(not is_unknown(label) for label in given):
                return given
        missing = [c for c in ("true_lat", "true_lon") if fields.indexOf(c) < 0]
        if missing:
            raise QgsProcessingException(
                self.tr(
                    "The predictions have neither a filled 'region' field nor {}: regions are "
                    "assigned by the true position of each photo."
                ).format(", ".join(missing))
            )
        index = QgsSpatialIndex()
        for position, (_name, geometry) in enumerate(polygons):
            feature = QgsFeature(position)
            feature.setGeometry(geometry)
            index.addFeature(feature)
        to_regions = QgsCoordinateTransform(
            QgsCoordinateReferenceSystem("EPSG:4326"), regions_crs, context.transformContext()
        )
        labels: list[Any] = []
        for feature in predictions.getFeatures():
            lat, lon = feature["true_lat"], feature["true_lon"]
            label = None
            if not (is_null(lat) or is_null(lon)):
                try:
                    point = QgsGeometry.fromPointXY(
                        to_regions.transform(QgsPointXY(float(lon), float(lat)))
                    )
                except QgsCsException:
                    point = None
                if point is not None:
                    # A point on a shared border is in both polygons: it goes to the first one.
                    for position in sorted(index.intersects(point.boundingBox())):
                        if polygons[position][1].intersects(point):
                            label = polygons[position][0]
                            break
            labels.append(label)
        return labels

    def write_choropleth(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        regions: Any,
        polygons: list[tuple[Any, QgsGeometry]],
        name_field: str,
        figures: Fairness,
    ) -> str:
        fields = QgsFields()
        region = QgsField(regions.fields().field(name_field))
        region.setName("region")
        fields.append(region)
        for name, kind in FIGURES:
            fields.append(QgsField(name, kind))
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, regions.wkbType(), regions.sourceCrs()
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        overall = figures.overall_median_error_m
        for name, geometry in polygons:
            stats = None if is_unknown(name) else figures.regions.get(str(name))
            feature = QgsFeature(fields)
            feature.setGeometry(geometry)
            if stats is None:
                feature.setAttributes([name, 0, *([None] * (len(FIGURES) - 1))])
            else:
                median = stats.median_error_m
                ratio = median / overall if overall > 0 else math.nan
                feature.setAttributes(
                    [name, stats.n]
                    + [_number(v) for v in (median, stats.mean_error_m, stats.acc_at_radius,
                                            stats.r_at_1, ratio, median - overall)]
                )  # fmt: skip
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        return dest_id
