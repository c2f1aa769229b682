"""QGIS-side data glue: point layers out to a GeoPackage for the worker, its results back in.

The worker reads what :func:`export_points` writes (image path, sample id and the optional label
fields, geometry in the layer's own CRS) and writes GeoPackages that :func:`load_gpkg_layer`
opens and :func:`apply_style` styles with ``resources/styles/<layer name>.qml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsFeedback,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .backend import resources_dir

SAMPLE_ID = "sample_id"
IMAGE_PATH = "image_path"
# Attributes that enrich the location captions and fairness figures when the layer has them.
LABEL_FIELDS = ("street", "city", "country", "region")


@dataclass
class ExportReport:
    """What :func:`export_points` wrote and what it left out (feature id and reason)."""

    path: Path
    written: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def crs_argument(crs: QgsCoordinateReferenceSystem) -> str:
    """The CRS as the worker's ``--out-crs``/``--crs`` options take it (authority id or WKT)."""
    return crs.authid() or crs.toWkt()


def resolve_image_path(value: object, base_dir: Path | None) -> str | None:
    """An absolute image path; relative ones are taken relative to the layer's own file."""
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    text = str(value).strip()
    if not text or text.upper() == "NULL":
        return None
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def layer_file_dir(layer: QgsMapLayer | None) -> Path | None:
    """Folder of the file a layer reads (for relative image paths), if it is a file."""
    if layer is None:
        return None
    source = layer.source().split("|")[0]
    path = Path(source)
    return path.parent if path.is_file() else None


def export_points(
    source: QgsFeatureSource,
    image_field: str,
    path: Path,
    *,
    base_dir: Path | None = None,
    feedback: QgsFeedback | None = None,
    progress_share: float = 100.0,
) -> ExportReport:
    """Write ``source``'s points to a GeoPackage the worker reads, in the source's own CRS.

    Columns: ``sample_id`` (the feature id, to join results back), ``image_path`` (absolute) and
    those of :data:`LABEL_FIELDS` the source has (matched case-insensitively). Features without a
    geometry or an image path are left out and listed in the report; the first part of a
    multipoint is used. The export fills the first ``progress_share`` percent of the progress.
    """
    source_fields = source.fields()
    if source_fields.indexOf(image_field) < 0:
        raise ValueError(
            f"the layer has no field {image_field!r}; choose the field holding the image paths"
        )
    by_lower = {f.name().lower(): f.name() for f in source_fields}
    labels = [(name, by_lower[name]) for name in LABEL_FIELDS if name in by_lower]
    fields = QgsFields()
    fields.append(QgsField(SAMPLE_ID, QVariant.String))
    fields.append(QgsField(IMAGE_PATH, QVariant.String))
    for name, _ in labels:
        fields.append(QgsField(name, QVariant.String))

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "samples"
    writer = QgsVectorFileWriter.create(
        str(path),
        fields,
        QgsWkbTypes.Point,
        source.sourceCrs(),
        QgsCoordinateTransformContext(),
        options,
    )
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise OSError(f"cannot write {path}: {writer.errorMessage()}")
    report = ExportReport(Path(path))
    total = max(source.featureCount(), 1)
    request = QgsFeatureRequest().setSubsetOfAttributes(
        [image_field, *(original for _, original in labels)], source_fields
    )
    for number, feature in enumerate(source.getFeatures(request)):
        if feedback is not None:
            if feedback.isCanceled():
                break
            feedback.setProgress(progress_share * number / total)
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            report.skipped.append((feature.id(), "no geometry"))
            continue
        if geometry.isMultipart():
            geometry = QgsGeometry(geometry.constGet().geometryN(0).clone())
        image = resolve_image_path(feature[image_field], base_dir)
        if image is None:
            report.skipped.append((feature.id(), f"empty {image_field}"))
            continue
        out = QgsFeature(fields)
        out.setGeometry(geometry)
        out.setAttributes(
            [str(feature.id()), image, *(_text(feature[original]) for _, original in labels)]
        )
        writer.addFeature(out)
        report.written += 1
    del writer  # closes the file
    return report


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    return str(value)


def style_path(name: str) -> Path | None:
    """``resources/styles/<name>.qml`` when the bundle has it."""
    path = resources_dir() / "styles" / f"{name}.qml"
    return path if path.is_file() else None


def apply_style(layer: QgsMapLayer, style_name: str) -> bool:
    """Apply the bundled QML style ``style_name``; False when there is none or it fails."""
    path = style_path(style_name)
    if path is None:
        return False
    _message, ok = layer.loadNamedStyle(str(path))
    if ok:
        layer.triggerRepaint()
    return bool(ok)


def load_gpkg_layer(path: Path, layer_name: str, display_name: str | None = None) -> QgsVectorLayer:
    """One layer of a GeoPackage; raises ``OSError`` if it cannot be opened."""
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", display_name or layer_name, "ogr")
    if not layer.isValid():
        raise OSError(f"cannot open layer {layer_name!r} of {path}")
    return layer


def run_group(project: QgsProject, name: str) -> QgsLayerTreeGroup:
    """The layer tree group named after a run, created at the top when missing."""
    root = project.layerTreeRoot()
    return root.findGroup(name) or root.insertGroup(0, name)


def add_to_group(project: QgsProject, layer: QgsMapLayer, group_name: str) -> None:
    """Add ``layer`` to the project inside the run's group (main thread only)."""
    project.addMapLayer(layer, False)
    run_group(project, group_name).addLayer(layer)


def move_to_group(project: QgsProject, layer: QgsMapLayer, group_name: str) -> None:
    """Move an already loaded layer into the run's group (main thread only)."""
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    if node is None:
        return
    group = run_group(project, group_name)
    if node.parent() is group:
        return
    group.addChildNode(node.clone())
    node.parent().removeChildNode(node)
