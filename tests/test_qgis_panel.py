"""The dock panel, built as QGIS builds it (offscreen)."""

from __future__ import annotations

import pytest
from qgis.core import QgsProject, QgsVectorLayer

from swclip_qgis.panel import SwclipDock


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
