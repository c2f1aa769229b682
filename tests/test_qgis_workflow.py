"""The plugin as an analyst meets it: photos imported by QGIS's own tool, the dock, one layer group.

Real worker, real photos (the bundled 41), small models (a couple of epochs). The photo layer is
what *Import geotagged photos* (``native:importphotos``) makes: a memory layer in EPSG:4326 with the
fields photo (full path), filename (name without extension), directory, altitude...
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
    QgsWkbTypes,
)

from swclip_qgis import backend_setup, panel
from swclip_qgis.backend import ENV_VAR, NO_BACKEND, SETTING_KEY
from swclip_qgis.fairness import gini
from swclip_qgis.panel import SwclipDock

from .conftest import PHOTOS
from .qgis_support import stand_in_backend_venv

EPOCHS = 2
TASK_GUARD_S = 900.0  # a hang detector far above a real run, not a speed requirement
REGIONS = {"Lund": (12.5, 55.3, 14.5, 56.3), "France": (-5.0, 42.0, 8.0, 51.0)}


@pytest.fixture(scope="module", autouse=True)
def checkout_backend():
    """The checkout's .venv runs the worker (neither the setting nor the variable is set)."""
    saved = os.environ.pop(ENV_VAR, None)
    QgsSettings().remove(SETTING_KEY)
    yield
    if saved is not None:
        os.environ[ENV_VAR] = saved


@pytest.fixture(scope="module")
def imported(provider) -> QgsVectorLayer:
    """The bundled photos as QGIS's Import geotagged photos loads them, in the project."""
    import processing

    layer = processing.run(
        "native:importphotos", {"FOLDER": str(PHOTOS), "OUTPUT": "TEMPORARY_OUTPUT"}
    )["OUTPUT"]
    layer.setName("Photos")
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture(scope="module")
def model(provider, imported, tmp_path_factory) -> Path:
    """A model trained from the memory layer itself, the image field left to the algorithm."""
    import processing

    out = tmp_path_factory.mktemp("models") / "model_photos"
    feedback = Recording()
    processing.run(
        "swclip:trainmodel",
        {"INPUT": imported, "EPOCHS": EPOCHS, "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert "Image path field: photo" in feedback.infos
    assert feedback.progress == sorted(feedback.progress), "the bar went backwards"
    # the command a user can rerun names the model folder, not the hidden staging folder
    [command] = feedback.commands
    assert command.endswith(f"--out {out}") and ".partial" not in command
    assert feedback.warnings == []  # a folder of the analyst's own: nothing to warn about
    return out


def test_a_model_in_processings_temporary_folder_comes_with_a_warning(provider, imported) -> None:
    import processing

    feedback = Recording()
    results = processing.run(
        "swclip:trainmodel",
        {"INPUT": imported, "EPOCHS": 1, "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT},
        feedback=feedback,
    )
    out = Path(results["OUTPUT"])
    assert out.is_relative_to(QgsProcessingUtils.tempFolder()) and (out / "config.json").is_file()
    [warning] = feedback.warnings
    assert warning.startswith("This is Processing's temporary folder, which QGIS deletes")


class Recording(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.commands: list[str] = []
        self.warnings: list[str] = []
        self.progress: list[float] = []
        self.progressChanged.connect(self.progress.append)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)

    def pushWarning(self, warning: str) -> None:
        self.warnings.append(warning)

    def pushCommandInfo(self, info: str) -> None:
        self.commands.append(info)


def wait_for(condition) -> None:
    """Let Qt run (tasks, queued signals) until ``condition()`` holds."""
    deadline = time.monotonic() + TASK_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "the background task did not finish"
        QgsApplication.processEvents()
        time.sleep(0.05)


def region_layer() -> QgsVectorLayer:
    """Two region polygons (Lund, France) as a memory layer in the project."""
    regions = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "regions", "memory")
    for name, box in REGIONS.items():
        feature = QgsFeature(regions.fields())
        feature.setAttributes([name])
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*box)))
        regions.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(regions)
    return regions


def groups(project: QgsProject) -> list[QgsLayerTreeGroup]:
    return [n for n in project.layerTreeRoot().children() if isinstance(n, QgsLayerTreeGroup)]


def layer_names(group: QgsLayerTreeGroup) -> list[str]:
    return [n.layer().name() for n in group.children() if isinstance(n, QgsLayerTreeLayer)]


def layer_in(group: QgsLayerTreeGroup, name: str):
    return next(n.layer() for n in group.children() if n.layer().name() == name)


def test_the_image_field_is_chosen_by_its_values(provider, imported) -> None:
    assert {"photo", "filename", "directory"} <= set(imported.fields().names())
    dock = SwclipDock(None)
    dock.layer_combo.setLayer(imported)
    assert dock.field_combo.currentField() == "photo"


def test_a_field_without_image_files_is_refused_naming_the_right_one(
    provider, imported, model
) -> None:
    import processing

    with pytest.raises(QgsProcessingException) as caught:
        processing.run(
            "swclip:localizelayer",
            {"INPUT": imported, "IMAGE_FIELD": "filename", "MODEL": str(model),
             "OUTPUT_POINTS": "TEMPORARY_OUTPUT", "OUTPUT_LINES": "TEMPORARY_OUTPUT"},
        )  # fmt: skip
    message = str(caught.value)
    assert "'filename' holds no existing image file" in message
    assert "'photo' does" in message


def test_dock_localizes_then_results_share_one_group_polygons_at_the_bottom(
    provider, imported, model
) -> None:
    import processing

    project = QgsProject.instance()
    before = {g.name() for g in groups(project)}
    dock = SwclipDock(None)
    dock.layer_combo.setLayer(imported)
    dock.model_widget.setFilePath(str(model))
    bar: list[int] = []
    dock.progress_bar.valueChanged.connect(bar.append)
    dock.start_localizing()
    assert dock.running, dock.message_label.text()
    wait_for(lambda: not dock.running)
    assert dock.message_label.text().startswith("Localized"), dock.message_label.text()
    assert bar == sorted(bar) and bar[-1] == 100

    [group] = [g for g in groups(project) if g.name() not in before]
    assert group.name() == "SW-CLIP model_photos"
    # named after the outputs, not the files the dock chose: QGIS would take the file names
    # (error_lines) for a model folder outside its temporary folder, as the tests' one is
    assert sorted(layer_names(group)) == ["Error lines", "Predicted points"]
    points = layer_in(group, "Predicted points")
    assert points.featureCount() == 41
    # the input's own attributes come first, then the prediction's
    names = [name for name in points.fields().names() if name != "fid"]  # GeoPackage's own
    assert names[:3] == imported.fields().names()[:3] == ["photo", "filename", "directory"]
    assert {"pred_lat", "pred_lon", "error_m", "in_training"} <= set(names)
    assert {f["in_training"] for f in points.getFeatures()} == {True}  # the model's own photos
    assert points.renderer().type() == "graduatedSymbol"  # the bundled style

    regions = region_layer()
    processing.runAndLoadResults(
        "swclip:fairnesschoropleth",
        {"INPUT": points, "REGIONS": regions, "REGION_FIELD": "name", "OUTPUT": "TEMPORARY_OUTPUT"},
    )
    processing.runAndLoadResults(
        "swclip:errorlines", {"INPUT": points, "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    processing.runAndLoadResults(
        "swclip:errorsurface", {"INPUT": points, "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    assert [g.name() for g in groups(project) if g.name() not in before] == [group.name()]
    layers = [n.layer() for n in group.children()]
    kinds = [
        "raster" if isinstance(layer, QgsRasterLayer) else layer.geometryType() for layer in layers
    ]
    assert kinds[-2:] == ["raster", QgsWkbTypes.PolygonGeometry]  # polygons at the bottom
    assert kinds.count(QgsWkbTypes.PolygonGeometry) == 1
    assert QgsWkbTypes.PointGeometry in kinds[:2]
    assert layers[-1].opacity() < 1.0  # the choropleth: the points below it stay visible
    surface = layers[-2]
    assert surface.crs().authid() == "EPSG:4326"  # the input's CRS, not a UTM zone
    assert surface.renderer().type() == "singlebandpseudocolor"  # styled, not grey


def test_a_csv_with_relative_paths_trains_and_localizes(provider, tmp_path) -> None:
    import processing

    imported = processing.run(
        "native:importphotos", {"FOLDER": str(PHOTOS), "OUTPUT": "TEMPORARY_OUTPUT"}
    )["OUTPUT"]
    folder = tmp_path / "survey" / "2026"
    folder.mkdir(parents=True)
    lines = ["image,x,y"]
    for feature in imported.getFeatures():
        point = feature.geometry().asPoint()
        relative = os.path.relpath(feature["photo"], folder)
        lines.append(f"{relative},{point.x()!r},{point.y()!r}")
    csv = folder / "photos.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    uri = f"{csv.as_uri()}?delimiter=,&xField=x&yField=y&crs=EPSG:4326"
    layer = QgsVectorLayer(uri, "csv photos", "delimitedtext")
    assert layer.isValid() and layer.featureCount() == 41
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "model"
    processing.run(
        "swclip:trainmodel",
        {"INPUT": layer, "IMAGE_FIELD": "image", "EPOCHS": 1, "OUTPUT": str(out)},
    )
    results = processing.run(
        "swclip:localizelayer",
        {"INPUT": layer.id(), "MODEL": str(out), "OUTPUT_POINTS": "TEMPORARY_OUTPUT",
         "OUTPUT_LINES": "TEMPORARY_OUTPUT", "OUTPUT_SKIPPED": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    context = QgsProcessingContext()
    points = results["OUTPUT_POINTS"]
    if isinstance(points, str):
        points = context.getMapLayer(points)
    assert points.featureCount() == 41
    skipped = results["OUTPUT_SKIPPED"]
    if isinstance(skipped, str):
        skipped = context.getMapLayer(skipped)
    assert skipped.fields().names() == ["record", "reason"]
    assert skipped.featureCount() == 0


def build_model() -> QgsProcessingModelAlgorithm:
    """Import geotagged photos -> Train model -> Localize layer -> Error lines -> choropleth."""
    model = QgsProcessingModelAlgorithm("photos to fairness", "SW-CLIP")
    from qgis.core import (
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsProcessingParameterVectorLayer,
    )

    for parameter in (
        QgsProcessingParameterFile("photos", "Photo folder", QgsProcessingParameterFile.Folder),
        QgsProcessingParameterVectorLayer("regions", "Regions"),
    ):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))

    def child(algorithm_id: str, child_id: str, sources: dict, outputs=()) -> None:
        step = QgsProcessingModelChildAlgorithm(algorithm_id)
        step.setChildId(child_id)
        for name, source in sources.items():
            step.addParameterSources(name, [source])
        final = {}
        for output in outputs:
            declared = QgsProcessingModelOutput(f"{child_id}_{output}")
            declared.setChildOutputName(output)
            final[f"{child_id}_{output}"] = declared
        step.setModelOutputs(final)
        model.addChildAlgorithm(step)

    param = QgsProcessingModelChildParameterSource.fromModelParameter
    output = QgsProcessingModelChildParameterSource.fromChildOutput
    value = QgsProcessingModelChildParameterSource.fromStaticValue
    child("native:importphotos", "import", {"FOLDER": param("photos")})
    child("swclip:trainmodel", "train",
          {"INPUT": output("import", "OUTPUT"), "EPOCHS": value(1)},
          outputs=("OUTPUT",))  # fmt: skip
    child("swclip:localizelayer", "localize",
          {"INPUT": output("import", "OUTPUT"), "MODEL": output("train", "OUTPUT")},
          outputs=("OUTPUT_POINTS",))  # fmt: skip
    child("swclip:errorlines", "lines", {"INPUT": output("localize", "OUTPUT_POINTS")},
          outputs=("OUTPUT",))  # fmt: skip
    child("swclip:fairnesschoropleth", "fairness",
          {"INPUT": output("localize", "OUTPUT_POINTS"), "REGIONS": param("regions"),
           "REGION_FIELD": value("name")}, outputs=("OUTPUT",))  # fmt: skip
    return model


def test_a_model_builder_model_runs_end_to_end(provider, tmp_path) -> None:
    regions = region_layer()
    model = build_model()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    parameters = {"photos": str(PHOTOS), "regions": regions.id(),
                  "train:train_OUTPUT": str(tmp_path / "model"),
                  "localize:localize_OUTPUT_POINTS": "TEMPORARY_OUTPUT",
                  "lines:lines_OUTPUT": "TEMPORARY_OUTPUT",
                  "fairness:fairness_OUTPUT": "TEMPORARY_OUTPUT"}  # fmt: skip
    ok, message = model.checkParameterValues(parameters, context)
    assert ok, message
    results, ok = model.run(parameters, context, feedback)
    assert ok
    points = context.getMapLayer(results["localize:localize_OUTPUT_POINTS"])
    lines = context.getMapLayer(results["lines:lines_OUTPUT"])
    choropleth = context.getMapLayer(results["fairness:fairness_OUTPUT"])
    assert points.featureCount() == lines.featureCount() == 41
    assert sorted(f["n"] for f in choropleth.getFeatures()) == [12, 29]


def test_localize_joins_region_names_from_a_polygon_layer(provider, imported, model) -> None:
    import processing

    results = processing.run(
        "swclip:localizelayer",
        {"INPUT": imported, "MODEL": str(model), "REGIONS": region_layer(),
         "REGION_FIELD": "name", "OUTPUT_POINTS": "TEMPORARY_OUTPUT",
         "OUTPUT_LINES": "TEMPORARY_OUTPUT"},
    )  # fmt: skip
    regions = [f["region"] for f in results["OUTPUT_POINTS"].getFeatures()]
    assert sorted(set(regions)) == ["France", "Lund"]
    assert regions.count("Lund") == 29


def test_the_dock_says_why_a_run_was_refused(provider, imported, model) -> None:
    dock = SwclipDock(None)
    dock.layer_combo.setLayer(imported)
    dock.field_combo.setField("filename")
    dock.model_widget.setFilePath(str(model))
    dock.start_localizing()
    wait_for(lambda: not dock.running)
    message = dock.message_label.text()
    assert message.startswith("Failed: The field 'filename' holds no existing image file")
    # the refused run's predictions folder is not left behind empty (earlier runs' are full)
    assert all(any(run.iterdir()) for run in (model / "predictions").iterdir())
    assert "'photo' does" in message
    assert dock.localize_button.isEnabled() and dock.progress_bar.value() == 0


def test_the_dock_creates_the_backend_a_run_could_not_use(
    provider, imported, model, tmp_path, monkeypatch
) -> None:
    # Debian's own Python exists but lacks torch & co.: a run fails, and the dock offers what
    # fixes it. The environment it creates is a stand-in completed offline (see
    # stand_in_backend_venv); the real one differs only in what pip installs.
    QgsSettings().setValue(SETTING_KEY, "/usr/bin/python3")
    requirements = stand_in_backend_venv(tmp_path)
    monkeypatch.setattr(panel, "default_backend_dir", lambda: tmp_path / "venv")
    monkeypatch.setattr(backend_setup, "bundled_requirements", lambda: requirements)
    try:
        dock = SwclipDock(None)
        assert dock.backend_box.create_button.isHidden()  # it exists: nothing to offer yet
        dock.layer_combo.setLayer(imported)
        dock.model_widget.setFilePath(str(model))
        dock.start_localizing()
        wait_for(lambda: not dock.running)
        assert dock.message_label.text().startswith(f"Failed: {NO_BACKEND}")
        assert not dock.backend_box.create_button.isHidden()
        dock.backend_box.create_button.click()
        dock.cancel()  # before pip is done: nothing is lost, the button stays
        wait_for(lambda: not dock.running)
        assert dock.message_label.text() == (
            "Cancelled; click Create backend environment again to complete it."
        )
        assert not dock.backend_box.create_button.isHidden()
        stages: list[str] = []
        monkeypatch.setattr(dock, "show_stage", stages.append)  # the bar's text, as it comes
        dock.backend_box.create_button.click()
        wait_for(lambda: not dock.running)
        assert stages == ["installing torch & co. (several minutes)", "checking the environment"]
        python = str(tmp_path / "venv" / "bin" / "python")
        assert dock.message_label.text() == f"Backend ready: {python}"
        assert QgsSettings().value(SETTING_KEY, "", type=str) == python
        assert dock.backend_box.label.text().startswith(f"Runs {python} (from the QGIS setting")
        assert dock.backend_box.create_button.isHidden()
    finally:
        QgsSettings().remove(SETTING_KEY)


def test_dock_maps_the_errors_per_region_when_regions_are_chosen(provider, imported, model) -> None:
    project = QgsProject.instance()
    before = {g.name() for g in groups(project)}
    regions = region_layer()
    dock = SwclipDock(None)
    assert dock.regions_combo.currentLayer() is None  # a polygon layer alone asks for nothing
    dock.layer_combo.setLayer(imported)
    dock.model_widget.setFilePath(str(model))
    dock.regions_combo.setLayer(regions)
    assert dock.region_field_combo.currentField() == "name"
    dock.start_localizing()
    wait_for(lambda: not dock.running)  # localize, then the choropleth of its predictions
    assert dock.progress_bar.value() == 100

    [group] = [g for g in groups(project) if g.name() not in before]
    assert sorted(layer_names(group)) == ["Error lines", "Predicted points", "Region choropleth"]
    choropleth = layer_in(group, "Region choropleth")
    figures = [(f["n"], f["median_error_m"], f["mean_error_m"]) for f in choropleth.getFeatures()]
    assert sorted(n for n, _, _ in figures) == [12, 29]  # France, Lund
    medians = [median for _, median, _ in figures]
    folder = Path(choropleth.source().split("|")[0]).parent
    assert dock.message_label.text() == (
        f"Localized: the layers are in {folder}. 2 regions hold photos; their median errors "
        f"differ up to {max(medians) / min(medians):.1f}x (Gini of the regional mean errors "
        f"{gini([mean for _, _, mean in figures]):.2f}).\n"
        # the model was trained on this very layer: the dock says what that means
        f"Warning: 41 of these 41 photos trained the model {model} (the same images, by "
        "content): their errors show how well it fits the photos it was trained on, not how well "
        "it localizes new ones; judge it on photos it has not seen"
    )


def test_a_training_interrupted_by_qgis_closing_can_be_continued(
    provider, imported, tmp_path
) -> None:
    import processing

    def train(out: Path, epochs: int, **extra) -> Recording:
        feedback = Recording()
        processing.run(
            "swclip:trainmodel",
            {"INPUT": imported, "EPOCHS": epochs, "OUTPUT": str(out), **extra},
            feedback=feedback,
        )
        return feedback

    def left_by_a_crash(name: str) -> Path:
        # what a training to tmp_path/name leaves when QGIS dies after its second epoch: the
        # hidden staging folder with the epochs done (the backend released its lock on exit)
        train(tmp_path / "done", 2)
        staging = tmp_path / f".{name}.0badcafe.partial"
        (tmp_path / "done").rename(staging)
        return staging

    with pytest.raises(QgsProcessingException, match="no interrupted training of"):
        train(tmp_path / "model", 3, RESUME=True)

    staging = left_by_a_crash("model")
    feedback = train(tmp_path / "model", 3, RESUME=True)
    assert f"Continuing the interrupted training in {staging} after epoch 2" in feedback.infos
    # the shell command reproduces the model from scratch (a resumed run ends the same)
    [command] = feedback.commands
    assert command.endswith(f"--out {tmp_path / 'model'}") and "--resume" not in command
    epochs = (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in epochs] == [1, 2, 3]  # two kept, one more
    assert not staging.exists()

    staging = left_by_a_crash("fresh")
    feedback = train(tmp_path / "fresh", 1)  # not asked to continue: said, then replaced
    assert any(f"{staging} holds an interrupted training" in w and "(2 epochs done)" in w
               for w in feedback.warnings)  # fmt: skip
    assert len((tmp_path / "fresh" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not staging.exists()


def test_a_model_folder_that_holds_other_things_is_refused_before_training(
    provider, imported, tmp_path
) -> None:
    import processing

    (tmp_path / "notes.txt").write_text("the analyst's own file")
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path, tmp_path / "a-file"):
        feedback = Recording()
        with pytest.raises(QgsProcessingException, match="is not an empty folder"):
            processing.run(
                "swclip:trainmodel",
                {"INPUT": imported, "EPOCHS": 1, "OUTPUT": str(out)},
                feedback=feedback,
            )
        assert feedback.commands == []  # refused before the backend started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "notes.txt"]


def test_the_dock_trains_into_a_new_folder_inside_a_folder_of_models(
    provider, imported, tmp_path
) -> None:
    (tmp_path / "older-model").mkdir()
    dock = SwclipDock(None)
    dock.layer_combo.setLayer(imported)
    dock.epochs_spin.setValue(1)
    dock.new_model_widget.setFilePath(str(tmp_path))  # the picker's existing folder
    dock.start_training()
    wait_for(lambda: not dock.running)
    [made] = [p for p in tmp_path.iterdir() if p.name != "older-model"]
    assert made.name.startswith(f"{imported.name()}-swclip-")
    assert (made / "checkpoint.pt").is_file()
    assert dock.message_label.text() == f"Model trained: {made}"
    assert dock.model_widget.filePath() == str(made)
