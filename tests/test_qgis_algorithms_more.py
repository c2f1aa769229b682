"""Build gallery, Error lines, Region fairness choropleth and Error surface through processing.run.

Real data: the bundled photos as a point layer in EPSG:3006, a model trained for one epoch on 12
of them by the plugin's own Train model, and the 41 photos localized by Localize layer (the real
worker). The checks compare with independent computations: the worker's own error lines, the
library's ``region_choropleth`` and ``write_error_surface`` on the same predictions, QGIS's
distance measurements.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsMapSettings,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from swclip_qgis.layers import apply_style

from .qgis_support import photos_in_sweref99, render

RENDER_PNG = Path("/tmp/swclip_fairness_render.png")
NEW_ALGORITHMS = (
    "swclip:buildgallery",
    "swclip:errorlines",
    "swclip:fairnesschoropleth",
    "swclip:errorsurface",
)

# Two boxes around the photos (Lund, Sweden and northern France) and one without any photo.
REGIONS = {
    "Lund": (12.5, 55.3, 14.5, 56.3),
    "France": (-5.0, 42.0, 8.0, 51.0),
    "Atlantic": (-30.0, 40.0, -20.0, 45.0),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """photos.gpkg: layers photos (41, EPSG:3006), train (12 of them), regions (EPSG:4326)
    and street (the Lund photos' street as a line, EPSG:3006)."""
    import geopandas as gpd
    from shapely.geometry import LineString, box

    photos = photos_in_sweref99()
    path = tmp_path_factory.mktemp("more") / "photos.gpkg"
    photos.to_file(path, layer="photos", driver="GPKG")
    # Every third photo: 10 in Lund, 4 in France, minus two -> 12, both areas represented.
    photos.iloc[::3].iloc[:12].to_file(path, layer="train", driver="GPKG")
    regions = gpd.GeoDataFrame(
        {"name": list(REGIONS)}, geometry=[box(*b) for b in REGIONS.values()], crs="EPSG:4326"
    )
    regions.to_file(path, layer="regions", driver="GPKG")
    lund = photos[photos["photo"].str.contains("lund_")]
    street = LineString([lund.geometry.iloc[0].coords[0], lund.geometry.iloc[-1].coords[0]])
    gpd.GeoDataFrame({"street": ["Sölvegatan"]}, geometry=[street], crs="EPSG:3006").to_file(
        path, layer="street", driver="GPKG"
    )
    return path


def uri(path: Path, layer: str) -> str:
    return f"{path}|layername={layer}"


@pytest.fixture(scope="module")
def trained(provider, data, tmp_path_factory) -> Path:
    import processing

    out = tmp_path_factory.mktemp("model") / "tiny"
    processing.run(
        "swclip:trainmodel",
        {"INPUT": uri(data, "train"), "IMAGE_FIELD": "photo", "EPOCHS": 1, "OUTPUT": str(out)},
    )
    return out


@pytest.fixture(scope="module")
def localized(provider, data, trained, tmp_path_factory) -> dict[str, str]:
    """Localize layer's predicted points and error lines (files) for the 41 photos."""
    import processing

    folder = tmp_path_factory.mktemp("localized")
    return processing.run(
        "swclip:localizelayer",
        {"INPUT": uri(data, "photos"), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "OUTPUT_POINTS": str(folder / "points.gpkg"),
         "OUTPUT_LINES": str(folder / "lines.gpkg")},
    )  # fmt: skip


def loaded_layer(results: dict, key: str) -> QgsVectorLayer:
    """The output layer that runAndLoadResults put into the project (styled by the plugin)."""
    layer = QgsProject.instance().mapLayer(results[key])
    if layer is None:  # a file path
        matches = [
            candidate
            for candidate in QgsProject.instance().mapLayers().values()
            if candidate.source().split("|")[0] == results[key]
        ]
        layer = matches[-1]
    return layer


def test_new_algorithms_are_listed_with_help_and_advanced_parameters(provider) -> None:
    registry = QgsApplication.processingRegistry()
    for algorithm_id in NEW_ALGORITHMS:
        algorithm = registry.algorithmById(algorithm_id)
        assert algorithm is not None, algorithm_id
        assert algorithm.shortHelpString() and algorithm.group()
    advanced = {
        algorithm_id: {
            p.name()
            for p in registry.algorithmById(algorithm_id).parameterDefinitions()
            if p.flags() & p.FlagAdvanced
        }
        for algorithm_id in NEW_ALGORITHMS
    }
    assert advanced["swclip:fairnesschoropleth"] == {"RADIUS_M", "RUN_NAME"}
    assert advanced["swclip:errorsurface"] == {"POWER", "MAX_DISTANCE_M"}
    assert advanced["swclip:buildgallery"] == {"DEVICE", "PRECISION", "RUN_NAME"}


@pytest.mark.parametrize(
    "choice, expected", [(0, []), (1, ["--precision", "auto"]), (3, ["--precision", "bf16"])]
)
def test_the_precision_parameter_reaches_the_worker_arguments(provider, choice, expected) -> None:
    from qgis.core import QgsProcessingContext

    for algorithm_id in ("trainmodel", "localizelayer", "evaluate", "buildgallery"):
        algorithm = QgsApplication.processingRegistry().algorithmById(f"swclip:{algorithm_id}")
        args = algorithm.runtime_args({"DEVICE": 1, "PRECISION": choice}, QgsProcessingContext())
        assert args == ["--device", "cpu", *expected], algorithm_id  # 0: the backend's default


def test_error_lines_equal_the_workers_lines(provider, localized) -> None:
    import processing

    results = processing.runAndLoadResults(
        "swclip:errorlines", {"INPUT": localized["OUTPUT_POINTS"], "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    lines = loaded_layer(results, "OUTPUT")
    assert lines.renderer().type() == "graduatedSymbol"  # styled by the post-processor
    assert lines.crs().authid() == "EPSG:3006"
    worker = QgsVectorLayer(localized["OUTPUT_LINES"], "worker", "ogr")
    # The attributes of the worker's own error lines (but the GeoPackage's fid).
    assert lines.fields().names() == [n for n in worker.fields().names() if n != "fid"]
    assert {"sample_id", "error_m", "true_lat", "pred_lon"} <= set(lines.fields().names())
    expected = {f["sample_id"]: f for f in worker.getFeatures()}
    assert lines.featureCount() == len(expected) == 41
    for line in lines.getFeatures():
        other = expected[line["sample_id"]]
        assert line["error_m"] == pytest.approx(other["error_m"])
        ours, theirs = line.geometry().asPolyline(), other.geometry().asPolyline()
        assert len(ours) == 2
        for a, b in zip(ours, theirs, strict=True):
            assert a.distance(b) < 0.01  # metres, EPSG:3006


def test_error_lines_need_the_prediction_fields(provider, data) -> None:
    import processing

    with pytest.raises(QgsProcessingException, match="true_lat, true_lon, pred_lat"):
        processing.run(
            "swclip:errorlines", {"INPUT": uri(data, "photos"), "OUTPUT": "TEMPORARY_OUTPUT"}
        )


def library_choropleth(points_file: str, data: Path, radius_m: float):
    import geopandas as gpd

    from swclip_core.outputs import region_choropleth

    predictions = gpd.read_file(points_file)
    # The plugin assigns photos to polygons when no 'region' value is filled in; the library
    # does so when there is no 'region' column.
    if "region" in predictions and predictions["region"].isna().all():
        predictions = predictions.drop(columns="region")
    regions = gpd.read_file(data, layer="regions")
    return region_choropleth(predictions, regions, region_field="name", radius_m=radius_m)


def test_fairness_choropleth_equals_the_library(provider, data, localized) -> None:
    import processing

    radius_m = 50_000.0
    results = processing.runAndLoadResults(
        "swclip:fairnesschoropleth",
        {"INPUT": localized["OUTPUT_POINTS"], "REGIONS": uri(data, "regions"),
         "REGION_FIELD": "name", "RADIUS_M": radius_m, "OUTPUT": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    layer = loaded_layer(results, "OUTPUT")
    assert layer.renderer().type() == "graduatedSymbol"
    assert layer.crs().authid() == "EPSG:4326"  # the region layer's
    assert layer.fields().names() == [
        "region", "n", "median_error_m", "mean_error_m", "acc_at_radius", "r_at_1",
        "median_error_ratio", "median_error_diff_m",
    ]  # fmt: skip
    ours = {f["region"]: f for f in layer.getFeatures()}
    assert set(ours) == set(REGIONS)
    # Independently: every Lund photo lies in the Lund box, the 12 others in France.
    assert (ours["Lund"]["n"], ours["France"]["n"], ours["Atlantic"]["n"]) == (29, 12, 0)

    library = library_choropleth(localized["OUTPUT_POINTS"], data, radius_m)
    for row in library.itertuples():
        feature = ours[row.region]
        assert feature["n"] == row.n
        for column in ("median_error_m", "mean_error_m", "acc_at_radius", "r_at_1",
                       "median_error_ratio", "median_error_diff_m"):  # fmt: skip
            expected = getattr(row, column)
            value = feature[column]
            if math.isnan(expected):
                assert value is None or str(value) == "NULL", (row.region, column)
            else:
                assert value == pytest.approx(expected, rel=1e-9), (row.region, column)
    fairness = library.attrs["fairness"]
    for key in ("median_error_max_min_ratio", "median_error_cv", "mean_error_gini",
                "overall_median_error_m", "regions_with_samples",
                "samples_without_region"):  # fmt: skip
        assert results[key.upper()] == pytest.approx(fairness[key], rel=1e-9), key
    assert results["REGIONS_WITH_SAMPLES"] == 2

    render_fairness(layer, localized, data)


def render_fairness(choropleth: QgsVectorLayer, localized: dict, data: Path) -> None:
    """Offscreen render of the choropleth, the error lines and the photos, for a human to see."""
    lines = QgsVectorLayer(localized["OUTPUT_LINES"], "lines", "ogr")
    assert apply_style(lines, "error_lines")
    photos = QgsVectorLayer(uri(data, "photos"), "photos", "ogr")
    photos.renderer().symbol().setColor(QColor("#1b9e77"))
    settings = QgsMapSettings()
    settings.setLayers([photos, lines, choropleth])
    settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    to_map = QgsCoordinateTransform(
        choropleth.crs(), settings.destinationCrs(), QgsProject.instance()
    )
    extent = to_map.transformBoundingBox(choropleth.extent())
    extent.scale(1.05)
    settings.setExtent(extent)
    image = render(settings, 1000, 600)
    assert image.save(str(RENDER_PNG), "PNG")
    sample = [image.pixelColor(x, y).name() for x in range(0, 1000, 10) for y in range(0, 600, 6)]
    assert sum(color != "#ffffff" for color in sample) > 100


def test_error_surface_equals_the_library(provider, localized, tmp_path) -> None:
    import geopandas as gpd
    import processing
    import rasterio

    from swclip_core.outputs import write_error_surface

    out = tmp_path / "surface.tif"
    results = processing.run(
        "swclip:errorsurface",
        {"INPUT": localized["OUTPUT_POINTS"], "CELL_M": 2000.0, "POWER": 3.0,
         "MAX_DISTANCE_M": 20_000.0, "OUTPUT": str(out)},
    )  # fmt: skip
    assert Path(results["OUTPUT"]) == out
    raster = QgsRasterLayer(str(out), "surface")
    assert raster.isValid() and raster.crs().authid() == "EPSG:3006"
    expected = write_error_surface(
        gpd.read_file(localized["OUTPUT_POINTS"]), tmp_path / "library.tif", crs="EPSG:3006",
        cell_m=2000.0, power=3.0, max_distance_m=20_000.0,
    )  # fmt: skip
    with rasterio.open(out) as ours, rasterio.open(expected) as theirs:
        assert ours.transform == theirs.transform and ours.shape == theirs.shape
        values, nodata = ours.read(1), ours.nodata
        assert (values == theirs.read(1)).all()
        assert ours.res == (2000.0, 2000.0)
        # Errors are interpolated, so the surface stays within the photos' range of errors.
        errors = gpd.read_file(localized["OUTPUT_POINTS"])["error_m"]
        inside = values[values != nodata]
        assert inside.size > 0
        assert errors.min() - 1e-3 <= inside.min() <= inside.max() <= errors.max() + 1e-3


def test_gallery_along_a_street_in_the_layers_crs(provider, data, trained) -> None:
    import processing

    spacing = 17.0
    results = processing.runAndLoadResults(
        "swclip:buildgallery",
        {"SOURCE": 1, "INPUT": uri(data, "street"), "SPACING_M": spacing,
         "NAME_FIELD": "street", "MODEL": str(trained), "OUTPUT": "TEMPORARY_OUTPUT",
         "GALLERY_FILE": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    gallery = loaded_layer(results, "OUTPUT")
    assert gallery.crs().authid() == "EPSG:3006"
    assert {"lat", "lon", "street", "caption"} <= set(gallery.fields().names())
    street = next(QgsVectorLayer(uri(data, "street"), "s", "ogr").getFeatures()).geometry()
    measure = QgsDistanceArea()
    measure.setSourceCrs(
        QgsCoordinateReferenceSystem("EPSG:3006"), QgsProject.instance().transformContext()
    )
    measure.setEllipsoid("WGS84")
    length = measure.measureLength(street)
    assert gallery.featureCount() == math.floor(length / spacing) + 1
    to_wgs84 = QgsCoordinateTransform(
        gallery.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    for feature in gallery.getFeatures():
        point = feature.geometry()
        assert point.distance(street) < 0.5  # on the street, in EPSG:3006 metres
        lonlat = to_wgs84.transform(point.asPoint())
        assert (lonlat.y(), lonlat.x()) == pytest.approx((feature["lat"], feature["lon"]), abs=1e-7)
        assert feature["street"] == "Sölvegatan" and "Sölvegatan" in feature["caption"]
    assert (
        QgsVectorLayer(f"{results['GALLERY_FILE']}|layername=gallery", "g", "ogr").featureCount()
        == gallery.featureCount()
    )


def test_gallery_from_photos_has_one_entry_per_place(provider, data) -> None:
    import processing

    results = processing.run(
        "swclip:buildgallery",
        {"SOURCE": 0, "INPUT": uri(data, "photos"), "IMAGE_FIELD": "photo",
         "OUTPUT": "TEMPORARY_OUTPUT", "GALLERY_FILE": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    gallery = results["OUTPUT"]
    photos = QgsVectorLayer(uri(data, "photos"), "photos", "ogr")
    places = {f.geometry().asWkt(3) for f in photos.getFeatures()}
    assert gallery.featureCount() == len(places) < photos.featureCount()
    assert gallery.crs().authid() == "EPSG:3006"
    for feature in gallery.getFeatures():
        assert feature.geometry().asWkt(3) in places


def test_gallery_source_must_match_the_layer(provider, data) -> None:
    import processing

    with pytest.raises(QgsProcessingException, match="needs a polygon layer"):
        processing.run(
            "swclip:buildgallery",
            {"SOURCE": 2, "INPUT": uri(data, "street"), "OUTPUT": "TEMPORARY_OUTPUT",
             "GALLERY_FILE": "TEMPORARY_OUTPUT"},
        )  # fmt: skip


def test_stdlib_fairness_figures_match_numpy_definitions() -> None:
    from swclip_core.metrics import region_fairness as library
    from swclip_qgis.fairness import region_fairness

    labels = ["a", "a", "b", "b", "b", None, "c", "", "c"]
    errors = [10.0, 30.0, 5.0, 500.0, 2000.0, 7.0, 0.5, 3.0, 1500.0]
    ours = region_fairness(zip(labels, errors, [None] * 9, strict=True), radius_m=100.0)
    table, disparity = library(labels, errors, radius_m=100.0)
    assert list(ours.regions) == list(table["region"])
    for row in table.itertuples():
        figures = ours.regions[row.region]
        assert (figures.n, figures.median_error_m, figures.mean_error_m, figures.acc_at_radius) == (
            row.n, pytest.approx(row.median_error_m), pytest.approx(row.mean_error_m),
            pytest.approx(row.acc_at_radius),
        )  # fmt: skip
    assert ours.median_error_cv == pytest.approx(disparity["median_error_cv"])
    assert ours.mean_error_gini == pytest.approx(disparity["mean_error_gini"])
    assert ours.median_error_max_min_ratio == pytest.approx(disparity["median_error_max_min_ratio"])
