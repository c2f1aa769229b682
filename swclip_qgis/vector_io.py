"""Any vector source out to a GeoPackage for the worker, and worker layers back in another CRS.

Complements :mod:`swclip_qgis.layers` (photo point layers) for the algorithms whose input is a
line, polygon or predictions layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFeatureSink,
    QgsFeatureSource,
    QgsFeedback,
    QgsFields,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

# GeoPackage keeps its feature id in "fid": a field of that name would clash with it.
RESERVED_FIELDS = ("fid",)


def export_layer(
    source: QgsFeatureSource,
    path: Path,
    layer_name: str,
    *,
    feedback: QgsFeedback | None = None,
    progress_share: float = 100.0,
) -> int:
    """Write ``source`` (geometry in its own CRS, all fields but ``fid``) as ``layer_name`` of
    the GeoPackage ``path``; the number of features written. Raises ``OSError`` on failure.

    The export fills the first ``progress_share`` percent of ``feedback``'s progress.
    """
    fields = QgsFields()
    kept = []
    for index, source_field in enumerate(source.fields()):
        if source_field.name().lower() not in RESERVED_FIELDS:
            fields.append(source_field)
            kept.append(index)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    writer = QgsVectorFileWriter.create(
        str(path),
        fields,
        source.wkbType(),
        source.sourceCrs(),
        QgsCoordinateTransformContext(),
        options,
    )
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise OSError(f"cannot write {path}: {writer.errorMessage()}")
    total = max(source.featureCount(), 1)
    written = 0
    for number, feature in enumerate(source.getFeatures()):
        if feedback is not None:
            if feedback.isCanceled():
                break
            feedback.setProgress(progress_share * number / total)
        out = QgsFeature(fields)
        out.setGeometry(feature.geometry())
        attributes = feature.attributes()
        out.setAttributes([attributes[i] for i in kept])
        if not writer.addFeature(out):
            raise OSError(f"cannot write feature {feature.id()} to {path}: {writer.errorMessage()}")
        written += 1
    del writer  # closes the file
    return written


def copy_transformed(
    layer: QgsVectorLayer, sink: QgsFeatureSink, crs: QgsCoordinateReferenceSystem, context: Any
) -> int:
    """Copy ``layer``'s features into ``sink``, their geometry transformed to ``crs``."""
    transform = QgsCoordinateTransform(layer.crs(), crs, context.transformContext())
    count = 0
    for feature in layer.getFeatures():
        geometry = feature.geometry()
        if not geometry.isNull():
            geometry.transform(transform)
            feature.setGeometry(geometry)
        sink.addFeature(feature, QgsFeatureSink.FastInsert)
        count += 1
    return count
