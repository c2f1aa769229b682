"""The dock panel, built as QGIS builds it (offscreen)."""

from __future__ import annotations

import sys

import pytest
from qgis.core import QgsProject, QgsSettings, QgsVectorLayer

from swclip_qgis.backend import SETTING_KEY
from swclip_qgis.panel import RECENT_RUNS_KEY, SwclipDock, remember_run

from .conftest import REPO, SHARED_DATA


@pytest.fixture
def photo_layer(qgis_app):
    layer = QgsVectorLayer(
        "Point?crs=EPSG:3006&field=sample_id:string&field=note:string&field=Image_Path:string",
        "photos",
        "memory",
    )
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeMapLayer(layer.id())


def test_the_panel_offers_the_layer_and_preselects_its_image_field(photo_layer):
    dock = SwclipDock(None)
    dock.layer_combo.setLayer(photo_layer)
    assert dock.field_combo.currentField() == "Image_Path"
    assert dock.selected_input() == (photo_layer, "Image_Path")


def test_the_panel_says_when_the_backend_python_does_not_exist(qgis_app, tmp_path) -> None:
    missing = tmp_path / "venv" / "bin" / "python"
    QgsSettings().setValue(SETTING_KEY, str(missing))
    try:
        dock = SwclipDock(None)
        assert dock.backend_box.label.text() == (
            f"Runs {missing} (from the QGIS setting '{SETTING_KEY}'). It does not exist yet."
        )
        assert dock.message_label.text().startswith(
            "No backend Python yet: click Create backend environment below"
        )
        assert not dock.backend_box.create_button.isHidden()
        dock.backend_box.picker.setFilePath(sys.executable)  # the analyst picks an existing one
        assert dock.backend_box.label.text().startswith(f"Runs {sys.executable} (from")
        assert dock.backend_box.create_button.isHidden()
    finally:
        QgsSettings().remove(SETTING_KEY)


def test_recent_runs_are_listed_once_there_is_one(qgis_app) -> None:
    QgsSettings().remove(RECENT_RUNS_KEY)
    try:
        dock = SwclipDock(None)
        assert dock.recent_group.isHidden()  # a first-time analyst sees the backend instead
        remember_run({"kind": "model", "name": "m1", "model": "/models/m1",
                      "output": "/models/m1", "time": "2026-11-30 14:00"})  # fmt: skip
        dock.refresh_recent_runs()
        assert not dock.recent_group.isHidden()
        assert dock.recent_list.item(0).text() == "2026-11-30 14:00  model: m1"
        dock.use_recent_run(dock.recent_list.item(0))
        assert dock.model_widget.filePath() == "/models/m1"
    finally:
        QgsSettings().remove(RECENT_RUNS_KEY)


@pytest.mark.parametrize(
    ("regions", "name_field"),
    [
        (REPO / "resources" / "sample_data" / "regions" / "naturalearth_admin1_gb.geojson", "name"),
        # the code LAD13CD is its first text field
        (SHARED_DATA / "regions" / "gb_lad_2013.geojson", "LAD13NM"),
    ],
    ids=["bundled", "shared-lad"],
)
def test_the_panel_names_regions_by_the_field_the_backend_would_take(
    qgis_app, regions, name_field
) -> None:
    if not regions.exists():
        pytest.skip(f"{regions} is not here (../shared/data sits beside a development checkout)")
    import geopandas as gpd

    from swclip_core.data.joins import name_field_of

    layer = QgsVectorLayer(str(regions), "regions", "ogr")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)  # the combo box offers the project's layers
    try:
        dock = SwclipDock(None)
        dock.regions_combo.setLayer(layer)
        assert dock.region_field_combo.currentField() == name_field
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    assert name_field_of(gpd.read_file(regions, rows=1), None, regions, "-") == name_field
