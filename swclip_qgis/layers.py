"""QGIS-side data glue: point layers out to a GeoPackage for the worker, its results back in.

The worker reads what :func:`export_points` writes (image path, sample id and the optional label
fields, geometry in the layer's own CRS) and writes GeoPackages that :func:`load_gpkg_layer`
opens and :func:`apply_style` styles with ``resources/styles/<layer name>.qml``.
"""

from __future__ import annotations

import re
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
    QgsLayerTreeLayer,
    QgsMapLayer,
    QgsProject,
    QgsProviderRegistry,
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
    """Folder of the file a layer reads (CSV, GeoPackage, Shapefile, GeoJSON...), for relative
    image paths; None for a layer without a file (memory, database, web service)."""
    if layer is None:
        return None
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path") or ""
    try:
        return Path(path).parent if path and Path(path).is_file() else None
    except OSError:  # not a file name at all (e.g. too long)
        return None


# Names that image path fields are often given; "photo" is QGIS's "Import geotagged photos".
IMAGE_FIELD_NAMES = ("image_path", "photo", "image", "path", "file", "filename")
# The backend's rule for the field that names regions or streets (swclip_core.columns.NAME_FIELDS
# and data.joins' ONS-style XXX99NM; a test keeps them equal), so that the dock picks what
# `swclip --regions` would: LAD13NM, not the code LAD13CD before it.
NAME_FIELDS = ("name", "name_en", "name:en", "name_eng", "nom", "street", "road", "road_name",
               "roadname", "region", "city", "town", "district")  # fmt: skip
ONS_NAME = re.compile(r"^[a-z]+\d{2}nm$", re.IGNORECASE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".heic")
FIELD_SAMPLE = 20  # values looked at per field


def image_files_in_field(
    source: QgsFeatureSource, field_name: str, base_dir: Path | None, sample: int = FIELD_SAMPLE
) -> tuple[int, str | None]:
    """How many of the first ``sample`` values of ``field_name`` are existing image files, and
    the first value that is not (None when all are)."""
    request = QgsFeatureRequest().setSubsetOfAttributes([field_name], source.fields())
    request.setFlags(QgsFeatureRequest.NoGeometry).setLimit(sample)
    found, missing = 0, None
    for feature in source.getFeatures(request):
        image = resolve_image_path(feature[field_name], base_dir)
        if image is not None and _is_image_file(Path(image)):
            found += 1
        elif missing is None and image is not None:
            missing = image
    return found, missing


def _is_image_file(path: Path) -> bool:
    try:
        return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    except (OSError, ValueError):  # a value that is no file name (too long, a NUL byte)
        return False


def text_fields(source: QgsFeatureSource) -> list[str]:
    return [f.name() for f in source.fields() if f.type() == QVariant.String]


def guess_name_field(source: QgsFeatureSource) -> str | None:
    """The text field that names the features: a usual name (in :data:`NAME_FIELDS` order), else
    an ONS-style one, else the first text field; None without text fields."""
    names = text_fields(source)
    by_lower = {name.strip().lower(): name for name in reversed(names)}  # the first one wins
    usual = [by_lower[n] for n in NAME_FIELDS if n in by_lower]
    ons = [name for name in names if ONS_NAME.match(name)]
    return next(iter(usual + ons + names), None)


def guess_image_field(source: QgsFeatureSource, base_dir: Path | None) -> str | None:
    """The text field whose values are existing image files (most of a sample), the usual
    names first on a tie; else the first field with a usual name; else None."""
    names = text_fields(source)
    by_name = sorted(names, key=_name_rank)
    counts = {name: image_files_in_field(source, name, base_dir)[0] for name in by_name}
    best = max(by_name, key=lambda name: counts[name], default=None)
    if best is not None and counts[best] > 0:
        return best
    named = [name for name in by_name if _name_rank(name) < len(IMAGE_FIELD_NAMES)]
    return named[0] if named else None


def _name_rank(name: str) -> int:
    lower = name.lower()
    return IMAGE_FIELD_NAMES.index(lower) if lower in IMAGE_FIELD_NAMES else len(IMAGE_FIELD_NAMES)


def check_image_field(source: QgsFeatureSource, field_name: str, base_dir: Path | None) -> None:
    """Raise ``ValueError`` with one sentence when ``field_name`` holds no existing image file
    among its first values; it names a field that does, if there is one."""
    found, missing = image_files_in_field(source, field_name, base_dir)
    if found:
        return
    better = guess_image_field(source, base_dir)
    where = f"relative to {base_dir}" if base_dir else "(the layer has no folder of its own)"
    example = f" (e.g. {missing})" if missing else ""
    if better and better != field_name and image_files_in_field(source, better, base_dir)[0]:
        raise ValueError(
            f"The field {field_name!r} holds no existing image file{example}; the field "
            f"{better!r} does: choose it as the image path field."
        )
    raise ValueError(
        f"The field {field_name!r} holds no existing image file{example}; relative paths are "
        f"read {where}. Choose the field with the photos' paths, or fix the paths."
    )


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


def new_group(project: QgsProject, name: str) -> QgsLayerTreeGroup:
    """A new layer tree group at the top, named ``name`` (``name (2)``... when that is taken)."""
    root = project.layerTreeRoot()
    taken = {group.name() for group in root.findGroups(True)}
    unique, number = name, 1
    while unique in taken:
        number += 1
        unique = f"{name} ({number})"
    return root.insertGroup(0, unique)


def group_of(project: QgsProject, layer_id: str | None) -> QgsLayerTreeGroup | None:
    """The group holding the layer ``layer_id`` (None at the top level or when absent)."""
    root = project.layerTreeRoot()
    node = root.findLayer(layer_id) if layer_id else None
    parent = node.parent() if node is not None else None
    return parent if isinstance(parent, QgsLayerTreeGroup) and parent != root else None


def drawing_rank(layer: QgsMapLayer) -> int:
    """Where a layer goes in its group, top first: points and tables, lines, rasters, polygons
    (so nothing opaque hides the points)."""
    if isinstance(layer, QgsVectorLayer):
        kind = layer.geometryType()
        return {QgsWkbTypes.LineGeometry: 1, QgsWkbTypes.PolygonGeometry: 3}.get(kind, 0)
    return 2


def place_in_group(project: QgsProject, layer: QgsMapLayer, group: QgsLayerTreeGroup) -> None:
    """Put ``layer`` (added to the project or not) in ``group`` below the layers that draw above
    it by :func:`drawing_rank` (main thread only)."""
    node = project.layerTreeRoot().findLayer(layer.id())
    rank = drawing_rank(layer)
    # Just below the lowest layer that draws above it (or of its kind): the group's order holds
    # even when QGIS put someone else's layer at its top (the layer panel's insertion point).
    index = 0
    for position, child in enumerate(group.children()):
        other = child.layer() if isinstance(child, QgsLayerTreeLayer) else None
        if other is not None and child is not node and drawing_rank(other) <= rank:
            index = position + 1
    if node is None:
        project.addMapLayer(layer, False)
        group.insertLayer(index, layer)
        return
    # The copy goes in before the original node leaves: a layer whose last node is removed
    # from the tree is removed from the project.
    group.insertChildNode(index, node.clone())
    node.parent().removeChildNode(node)
