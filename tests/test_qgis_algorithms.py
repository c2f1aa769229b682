"""The plugin's Processing algorithms driven through ``processing.run`` with the real worker.

The photos are the bundled real ones (resources/sample_data/photos), turned into a point layer in
EPSG:3006 (SWEREF99 TM) so that every CRS step is exercised. Results are checked against
independent computations: the CLI's own run on the same model and input, and QGIS's coordinate
transforms.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapSettings,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from swclip_qgis.backend import ENV_VAR, SETTING_KEY, default_backend_dir
from swclip_qgis.layers import apply_style
from swclip_qgis.runner import WorkerFailed, run_worker

from .conftest import REPO
from .qgis_support import photos_in_sweref99, render, stand_in_backend_venv

VENV = REPO / ".venv"
SWCLIP = VENV / "bin" / "swclip"
RENDER_PNG = Path("/tmp/swclip_plugin_render.png")
EPOCHS = 2
ALGORITHMS = {
    "swclip:checkbackend",
    "swclip:createbackend",
    "swclip:trainmodel",
    "swclip:localizelayer",
    "swclip:evaluate",
}


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what the algorithm reported; optionally cancels at a worker progress message."""

    def __init__(self, cancel_at_message: str | None = None) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.commands: list[str] = []
        self.progress: list[float] = []
        self.cancel_at_message = cancel_at_message
        self.cancelled_at: float | None = None
        self.progressChanged.connect(self.progress.append)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)

    def pushCommandInfo(self, info: str) -> None:
        self.commands.append(info)

    def setProgressText(self, text: str) -> None:
        # The runner passes the worker's progress messages ("epoch 3/500") through here.
        wanted = self.cancel_at_message
        if wanted and text.startswith(wanted) and not self.isCanceled():
            self.cancelled_at = time.monotonic()
            self.cancel()


@pytest.fixture()
def checkout_backend(monkeypatch):
    """The backend is the checkout's .venv (neither the setting nor the variable is set)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    QgsSettings().remove(SETTING_KEY)
    yield
    QgsSettings().remove(SETTING_KEY)


@pytest.fixture(scope="module")
def photo_layer(tmp_path_factory) -> Path:
    """The real photos as a GeoPackage point layer in EPSG:3006 with the image field "photo"."""
    layer = photos_in_sweref99()
    path = tmp_path_factory.mktemp("photos") / "photos.gpkg"
    layer.to_file(path, layer="photos", driver="GPKG")
    return path


def layer_uri(path: Path) -> str:
    return f"{path}|layername=photos"


@pytest.fixture(scope="module")
def trained(provider, photo_layer, tmp_path_factory) -> Path:
    import processing

    QgsSettings().remove(SETTING_KEY)
    out = tmp_path_factory.mktemp("models") / "photos-model"
    results = processing.run(
        "swclip:trainmodel",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "EPOCHS": EPOCHS,
         "OUTPUT": str(out)},
    )  # fmt: skip
    assert Path(results["OUTPUT"]) == out
    return out


def features_by_image(layer: QgsVectorLayer) -> dict[str, dict]:
    return {
        f["image_path"]: {**f.attributeMap(), "geometry": f.geometry()} for f in layer.getFeatures()
    }


# --- the provider ------------------------------------------------------------------------------


def test_provider_lists_algorithms_with_help_and_advanced_parameters(provider) -> None:
    ids = {algorithm.id() for algorithm in provider.algorithms()}
    assert ids >= ALGORITHMS
    for algorithm in provider.algorithms():
        assert algorithm.shortHelpString(), algorithm.id()
        assert algorithm.group(), algorithm.id()
    train = QgsApplication.processingRegistry().algorithmById("swclip:trainmodel")
    advanced = {p.name() for p in train.parameterDefinitions() if p.flags() & p.FlagAdvanced}
    assert {"BACKBONE", "SCALE_M", "CUTOFF_M", "LAMBDA_NC", "LAMBDA_FAIR", "BATCH_SIZE",
            "DEVICE", "PRECISION", "SEED"} <= advanced  # fmt: skip
    assert not {"INPUT", "IMAGE_FIELD", "OBJECTIVE", "EPOCHS", "OUTPUT"} & advanced


# --- worker protocol and failures (no model needed) -------------------------------------------


def test_bad_arguments_come_back_as_the_cli_message(checkout_backend) -> None:
    with pytest.raises(WorkerFailed) as caught:
        run_worker("train", ["--no-such-option"], QgsProcessingFeedback())
    assert caught.value.exit_code == 2
    assert "required" in str(caught.value) or "unrecognized" in str(caught.value)


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the backend")
def test_a_worker_killed_by_the_system_is_reported_with_its_stderr(tmp_path) -> None:
    dying = tmp_path / "dying-python"
    dying.write_text(
        "#!/bin/sh\ncat >/dev/null\necho 'allocating 40 GB for the batch' >&2\nkill -9 $$\n",
        encoding="utf-8",
    )
    dying.chmod(0o755)
    with pytest.raises(WorkerFailed) as caught:
        run_worker("train", [], QgsProcessingFeedback(), python=str(dying))
    message = str(caught.value)
    assert "SIGKILL" in message and "memory" in message
    assert "allocating 40 GB for the batch" in message


def test_missing_backend_is_one_clear_message(provider, photo_layer, tmp_path) -> None:
    import processing

    QgsSettings().setValue(SETTING_KEY, str(tmp_path / "nowhere" / "python"))
    try:
        with pytest.raises(QgsProcessingException) as caught:
            processing.run(
                "swclip:localizelayer",
                {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo",
                 "MODEL": str(tmp_path), "OUTPUT_POINTS": "TEMPORARY_OUTPUT",
                 "OUTPUT_LINES": "TEMPORARY_OUTPUT"},
            )  # fmt: skip
    finally:
        QgsSettings().remove(SETTING_KEY)
    message = str(caught.value)
    assert "No usable SW-CLIP backend Python" in message
    assert str(tmp_path / "nowhere" / "python") in message
    assert SETTING_KEY in message and "make setup" in message
    assert "Traceback" not in message


# --- train and localize with the real worker ---------------------------------------------------


@pytest.mark.slow
def test_train_then_localize_matches_the_cli(provider, photo_layer, trained, tmp_path) -> None:
    import processing

    assert {p.name for p in trained.iterdir()} >= {"config.json", "checkpoint.pt"}
    assert json.loads((trained / "config.json").read_text())["epochs"] == EPOCHS
    assert not list(trained.parent.glob(".*partial"))  # the staging folder was renamed

    feedback = RecordingFeedback()
    results = processing.run(
        "swclip:localizelayer",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "OUTPUT_POINTS": str(tmp_path / "points.gpkg"),
         "OUTPUT_LINES": str(tmp_path / "lines.gpkg")},
        feedback=feedback,
    )  # fmt: skip
    assert feedback.progress and max(feedback.progress) > 50.0  # the worker's progress lines
    points = QgsVectorLayer(results["OUTPUT_POINTS"], "points", "ogr")
    lines = QgsVectorLayer(results["OUTPUT_LINES"], "lines", "ogr")
    source = QgsVectorLayer(layer_uri(photo_layer), "photos", "ogr")
    assert points.featureCount() == lines.featureCount() == source.featureCount() == 41
    assert points.crs().authid() == lines.crs().authid() == "EPSG:3006"
    names = set(points.fields().names())
    assert {"sample_id", "image_path", "error_m", "uncertainty_m", "pred_lat", "pred_lon"} <= names

    # Geometry in EPSG:3006 is the predicted lat/lon, transformed independently by QGIS.
    to_wgs84 = QgsCoordinateTransform(
        points.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    for feature in points.getFeatures():
        lonlat = to_wgs84.transform(feature.geometry().asPoint())
        assert lonlat.y() == pytest.approx(feature["pred_lat"], abs=1e-6)
        assert lonlat.x() == pytest.approx(feature["pred_lon"], abs=1e-6)
    # Each error line starts at the photo's own position in the input layer.
    truth = {f["photo"]: f.geometry().asPoint() for f in source.getFeatures()}
    plugin = features_by_image(points)
    for line in lines.getFeatures():
        start = line.geometry().asPolyline()[0]
        image = next(k for k, v in plugin.items() if v["sample_id"] == line["sample_id"])
        assert start.distance(truth[image]) < 0.01

    # The CLI on the same layer and model gives the same errors.
    cli_out = tmp_path / "cli.gpkg"
    subprocess.run(
        [str(SWCLIP), "predict", str(photo_layer), "--image-column", "photo", "--model",
         str(trained), "--out", str(cli_out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    cli = features_by_image(QgsVectorLayer(f"{cli_out}|layername=predicted_points", "c", "ogr"))
    assert set(cli) == set(plugin)
    for image, row in cli.items():
        assert plugin[image]["error_m"] == pytest.approx(row["error_m"], abs=0.5), image

    render_outputs(points, lines, source)


@pytest.mark.slow
def test_localize_fuses_an_image_knn_model_as_the_cli_does(
    provider, photo_layer, trained, tmp_path
) -> None:
    """The advanced Fuse parameters reach `swclip predict` as --fuse/--knn-weight: the plugin's
    fused errors are the CLI's, and they differ from the unfused ones."""
    import processing

    from swclip_qgis.algorithms.train_model import OBJECTIVES

    knn = tmp_path / "knn-model"
    processing.run(
        "swclip:trainmodel",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo",
         "OBJECTIVE": OBJECTIVES.index("image-knn"), "OUTPUT": str(knn)},
    )  # fmt: skip
    feedback = RecordingFeedback()
    results = processing.run(
        "swclip:localizelayer",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "FUSE": str(knn), "KNN_WEIGHT": 0.4, "OUTPUT_POINTS": str(tmp_path / "points.gpkg"),
         "OUTPUT_LINES": "TEMPORARY_OUTPUT"},
        feedback=feedback,
    )  # fmt: skip
    [command] = feedback.commands
    assert "--fuse" in command and "--knn-weight 0.4" in command
    fused = features_by_image(QgsVectorLayer(results["OUTPUT_POINTS"], "points", "ogr"))
    outputs = {}
    for extra in ([], ["--fuse", str(knn), "--knn-weight", "0.4"]):
        out = tmp_path / f"cli-{len(extra)}.gpkg"
        subprocess.run(
            [str(SWCLIP), "predict", str(photo_layer), "--image-column", "photo", "--model",
             str(trained), "--out", str(out), *extra],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        outputs[bool(extra)] = features_by_image(
            QgsVectorLayer(f"{out}|layername=predicted_points", "c", "ogr")
        )
    assert set(outputs[True]) == set(fused)
    for image, row in outputs[True].items():
        assert fused[image]["error_m"] == pytest.approx(row["error_m"], abs=0.5), image
    assert any(
        abs(fused[image]["error_m"] - row["error_m"]) > 1.0 for image, row in outputs[False].items()
    )


@pytest.mark.slow
def test_the_logged_command_reproduces_the_run_and_progress_only_rises(
    provider, photo_layer, trained, tmp_path
) -> None:
    import processing

    feedback = RecordingFeedback()
    results = processing.run(
        "swclip:localizelayer",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "OUTPUT_POINTS": str(tmp_path / "points.gpkg"), "OUTPUT_LINES": "TEMPORARY_OUTPUT"},
        feedback=feedback,
    )  # fmt: skip
    assert feedback.progress == sorted(feedback.progress)
    assert feedback.progress[0] < 10.0 and feedback.progress[-1] > 95.0
    [command] = feedback.commands
    out = Path(shlex.split(command)[shlex.split(command).index("--out") + 1])
    plugin = features_by_image(QgsVectorLayer(results["OUTPUT_POINTS"], "points", "ogr"))
    out.unlink()
    subprocess.run(["bash", "-c", command], check=True, capture_output=True, timeout=300)
    again = features_by_image(QgsVectorLayer(f"{out}|layername=predicted_points", "a", "ogr"))
    assert set(again) == set(plugin)
    for image, row in again.items():
        assert (plugin[image]["pred_lat"], plugin[image]["pred_lon"]) == pytest.approx(
            (row["pred_lat"], row["pred_lon"]), abs=1e-9
        )


def render_outputs(points: QgsVectorLayer, lines: QgsVectorLayer, source: QgsVectorLayer) -> None:
    """Offscreen render of the styled outputs over the photo positions, for a human to look at."""
    assert apply_style(points, "predicted_points")
    assert apply_style(lines, "error_lines")
    assert points.renderer().type() == "graduatedSymbol"
    source.renderer().symbol().setColor(QColor("#1b9e77"))
    # The 29 Lund photos along one street: the other photos are far away and would shrink them
    # to a dot.
    lund = [f.geometry().boundingBox() for f in source.getFeatures() if "lund" in f["photo"]]
    extent = QgsRectangle(lund[0])
    for box in lund[1:]:
        extent.combineExtentWith(box)
    extent.scale(1.6)
    settings = QgsMapSettings()
    settings.setLayers([points, lines, source])
    settings.setDestinationCrs(points.crs())
    settings.setExtent(extent)
    image = render(settings, 900, 700)
    assert image.save(str(RENDER_PNG), "PNG")
    # Not blank: a good share of pixels is not the background.
    sample = [image.pixelColor(x, y).name() for x in range(0, 900, 9) for y in range(0, 700, 7)]
    assert sum(color != "#ffffff" for color in sample) > 20


@pytest.mark.slow
def test_evaluate_writes_table1_report(provider, photo_layer, trained, tmp_path) -> None:
    import processing

    report = tmp_path / "report.json"
    results = processing.run(
        "swclip:evaluate",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "OUTPUT": str(report)},
    )  # fmt: skip
    figures = json.loads(report.read_text())
    for key in ("median_error_m", "mean_error_m", "r_at_1", "geo_align", "ssi"):
        assert results[key.upper()] == pytest.approx(figures["summary"][key])
    assert figures["context"]["protocol"] == "closed"
    html = tmp_path / "report.html"
    processing.run(
        "swclip:evaluate",
        {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(trained),
         "OUTPUT": str(html)},
    )  # fmt: skip
    text = html.read_text()
    for label in ("Median error (m)", "R@1", "Geo-Align", "SSI", "City-Align"):
        assert label in text
    # the model was trained on these very photos: the report says so first
    assert figures["context"]["photos_seen_in_training"] == 41
    assert "<strong>41 of the evaluated photos trained this model</strong>" in text


def test_evaluate_refuses_a_gallery_in_the_closed_protocol(provider, photo_layer, tmp_path) -> None:
    """The closed protocol's gallery is the photos' own captions: a gallery (or an image-kNN
    model) given with it is refused in the dialog, not ignored or refused by the backend."""
    algorithm = QgsApplication.processingRegistry().algorithmById("swclip:evaluate")
    gallery = tmp_path / "gallery.csv"
    gallery.write_text("lat,lon\n55.7,13.19\n")
    parameters = {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "MODEL": str(tmp_path),
                  "GALLERY": str(gallery), "OUTPUT": str(tmp_path / "r.html")}  # fmt: skip
    ok, message = algorithm.checkParameterValues(parameters, QgsProcessingContext())
    assert not ok and "Protocol to open" in message
    ok, _ = algorithm.checkParameterValues({**parameters, "PROTOCOL": 1}, QgsProcessingContext())
    assert ok


@pytest.mark.slow
def test_cancel_during_training_stops_within_seconds_and_leaves_nothing(
    provider, photo_layer, tmp_path, checkout_backend
) -> None:
    import processing

    out = tmp_path / "models" / "cancelled"
    feedback = RecordingFeedback(cancel_at_message="epoch 2/")  # the worker is training
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(
            "swclip:trainmodel",
            {"INPUT": layer_uri(photo_layer), "IMAGE_FIELD": "photo", "EPOCHS": 500,
             "OUTPUT": str(out)},
            feedback=feedback,
        )  # fmt: skip
    assert feedback.cancelled_at is not None
    assert time.monotonic() - feedback.cancelled_at < 10.0
    assert not out.exists()
    assert list((tmp_path / "models").iterdir()) == []  # no staging folder, no checkpoint


# --- packaging ---------------------------------------------------------------------------------

LOAD_ZIPPED_PLUGIN = """
import json, sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import qgis.utils
qgis.utils.plugin_paths = [sys.argv[1]]
sys.path.insert(0, sys.argv[1])
qgis.utils.updateAvailablePlugins()
report = {"available": list(qgis.utils.available_plugins)}
report["loaded"] = qgis.utils.loadPlugin("swclip_qgis")
report["started"] = qgis.utils.startPlugin("swclip_qgis")
provider = QgsApplication.processingRegistry().providerById("swclip")
report["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
import swclip_qgis.backend as backend
report["resources"] = str(backend.resources_dir())
report["heavy"] = sorted({"torch", "swclip_core"} & set(sys.modules))
import os
os.environ.pop("SWCLIP_PYTHON", None)
from qgis.core import QgsSettings
QgsSettings().remove(backend.SETTING_KEY)
report["backend"] = list(backend.backend_choice())
report["created"] = str(backend.venv_python(backend.default_backend_dir()))
print(json.dumps(report), flush=True)
app.exitQgis()
"""


@pytest.mark.slow
def test_packaged_zip_installs_into_a_fresh_profile(tmp_path) -> None:
    # qgis-plugin-ci builds from committed files: commit the working tree in a scratch clone.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run([*git, "add", "-A"], cwd=clone, check=True)
    # --allow-empty: in a clean checkout (CI) the working tree has nothing new to commit
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "working tree"], cwd=clone, check=True
    )
    build = subprocess.run(
        ["make", "package-zip", f"VENV={VENV}"],
        cwd=clone, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    zips = list((clone / "dist").glob("swclip_qgis.*.zip"))
    assert len(zips) == 1, build.stdout + build.stderr

    with zipfile.ZipFile(zips[0]) as archive:
        names = archive.namelist()
        assert {name.split("/")[0] for name in names} == {"swclip_qgis"}
        assert "swclip_qgis/bundled/swclip_core/worker.py" in names
        assert "swclip_qgis/bundled/requirements.txt" in names
        assert "swclip_qgis/bundled/resources/styles/predicted_points.qml" in names
        compiled = (".pyc", ".so", ".pyd", ".dll", ".pt", ".pth", ".safetensors", ".bin")
        assert [n for n in names if n.endswith(compiled)] == []
        plugins = tmp_path / "profile" / "python" / "plugins"
        archive.extractall(plugins)

    completed = subprocess.run(
        [sys.executable, "-c", LOAD_ZIPPED_PLUGIN, str(plugins)],
        cwd=tmp_path,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen",
             "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["available"] == ["swclip_qgis"]
    assert report["loaded"] and report["started"]
    assert set(report["algorithms"]) >= ALGORITHMS
    assert report["resources"] == str(plugins / "swclip_qgis" / "bundled" / "resources")
    assert report["heavy"] == []
    # Without a setting, an installed plugin runs the environment Create backend environment makes
    assert report["backend"] == [report["created"], "the environment of Create backend environment"]
    assert report["created"].startswith(str(tmp_path / "profile"))
    # Last, the Bandit scan of the zip's contents (part of `make package-zip`).
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]


def test_create_backend_makes_a_venv_that_imports_the_bundled_core(
    provider, tmp_path, checkout_backend
) -> None:
    import processing

    # An empty requirements file keeps this offline and fast; the real one is the bundled
    # requirements.txt, which pip installs the same way. The algorithm completes an existing
    # environment like this one.
    requirements = stand_in_backend_venv(tmp_path)
    feedback = RecordingFeedback()
    results = processing.run(
        "swclip:createbackend",
        {"OUTPUT": str(tmp_path / "venv"), "REQUIREMENTS": str(requirements),
         "BASE_PYTHON": "/usr/bin/python3"},
        feedback=feedback,
    )  # fmt: skip
    python = Path(results["PYTHON"])
    assert python == tmp_path / "venv" / "bin" / "python"
    assert QgsSettings().value(SETTING_KEY, "", type=str) == str(python)
    probe = subprocess.run(
        [str(python), "-c", "import swclip_core, sys; print(swclip_core.__file__, sys.prefix)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    core_file, prefix = probe.stdout.split()
    assert Path(core_file) == REPO / "swclip_core" / "__init__.py"
    assert Path(prefix) == tmp_path / "venv"
    assert any("Installing" in line for line in feedback.infos)
    assert not any("Creating the virtual environment" in line for line in feedback.infos)


def test_create_backend_without_a_folder_means_the_profiles_folder(provider) -> None:
    # processing.run("swclip:createbackend", {}) from the Python console: Processing alone would
    # refuse the missing destination although the parameter has a default.
    algorithm = QgsApplication.processingRegistry().algorithmById("swclip:createbackend")
    assert algorithm.checkParameterValues({}, QgsProcessingContext()) == (True, "")
    assert algorithm.parameterDefinition("OUTPUT").defaultValue() == str(default_backend_dir())
