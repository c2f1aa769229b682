"""The SW-CLIP dock panel: pick a photo layer, train or pick a model, localize, see the result.

Plain Qt widgets. Layers are read (exported) and loaded only on the main thread; the backend runs
in a :class:`~swclip_qgis.tasks.WorkerTask` so QGIS stays responsive, and the task manager's
cancel button (or the panel's) stops the worker.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFieldProxyModel,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .algorithms.train_model import OBJECTIVES
from .backend import SETTING_KEY
from .layers import (
    add_to_group,
    apply_style,
    crs_argument,
    export_points,
    layer_file_dir,
    load_gpkg_layer,
)
from .tasks import WorkerTask

RECENT_RUNS_KEY = "swclip/recent_runs"
MAX_RECENT_RUNS = 10
OUTPUT_LAYERS = ("predicted_points", "error_lines")


def recent_runs() -> list[dict]:
    """Recent runs, newest first: ``{"kind", "name", "model", "output", "time"}``."""
    try:
        runs = json.loads(QgsSettings().value(RECENT_RUNS_KEY, "[]", type=str))
    except ValueError:
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def remember_run(run: dict) -> None:
    """Put ``run`` first in the recent runs (the same output only once)."""
    runs = [r for r in recent_runs() if r.get("output") != run.get("output")]
    runs.insert(0, run)
    QgsSettings().setValue(RECENT_RUNS_KEY, json.dumps(runs[:MAX_RECENT_RUNS]))


class SwclipDock(QDockWidget):
    """Dock widget with the common workflow; see the module docstring."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("SW-CLIP", parent)
        self.setObjectName("SwclipDock")
        self.task: WorkerTask | None = None
        body = QWidget()
        layout = QVBoxLayout(body)

        inputs = QGroupBox(self.tr("Photos"))
        form = QFormLayout(inputs)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.PointLayer)
        self.field_combo = QgsFieldComboBox()
        self.field_combo.setFilters(QgsFieldProxyModel.String)
        self.layer_combo.layerChanged.connect(self.set_layer)
        self.set_layer(self.layer_combo.currentLayer())
        form.addRow(self.tr("Point layer"), self.layer_combo)
        form.addRow(self.tr("Image path field"), self.field_combo)
        layout.addWidget(inputs)

        training = QGroupBox(self.tr("Train a model"))
        form = QFormLayout(training)
        self.objective_combo = QComboBox()
        self.objective_combo.addItems(OBJECTIVES)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(30)
        self.new_model_widget = QgsFileWidget()
        self.new_model_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.new_model_widget.setToolTip(self.tr("A new folder for the trained model"))
        self.train_button = QPushButton(self.tr("Train"))
        self.train_button.clicked.connect(self.start_training)
        form.addRow(self.tr("Objective"), self.objective_combo)
        form.addRow(self.tr("Epochs"), self.epochs_spin)
        form.addRow(self.tr("New model folder"), self.new_model_widget)
        form.addRow(self.train_button)
        layout.addWidget(training)

        localize = QGroupBox(self.tr("Localize"))
        form = QFormLayout(localize)
        self.model_widget = QgsFileWidget()
        self.model_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.localize_button = QPushButton(self.tr("Localize layer"))
        self.localize_button.clicked.connect(self.start_localizing)
        form.addRow(self.tr("Model folder"), self.model_widget)
        form.addRow(self.localize_button)
        layout.addWidget(localize)

        status = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        status.addWidget(self.progress_bar)
        status.addWidget(self.cancel_button)
        layout.addLayout(status)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.message_label)

        layout.addWidget(QLabel(self.tr("Recent runs (double-click a model to use it)")))
        self.recent_list = QListWidget()
        self.recent_list.itemActivated.connect(self.use_recent_run)
        layout.addWidget(self.recent_list)

        backend = QGroupBox(self.tr("Backend Python (empty: the source checkout's .venv)"))
        backend_layout = QVBoxLayout(backend)
        self.backend_widget = QgsFileWidget()
        self.backend_widget.setFilePath(QgsSettings().value(SETTING_KEY, "", type=str))
        self.backend_widget.fileChanged.connect(self.set_backend_python)
        backend_layout.addWidget(self.backend_widget)
        layout.addWidget(backend)
        layout.addStretch(1)
        self.setWidget(body)
        self.refresh_recent_runs()

    # --- settings and recent runs --------------------------------------------------------------

    def set_layer(self, layer: QgsVectorLayer | None) -> None:
        """Show the layer's text fields, the likeliest image path field first chosen."""
        self.field_combo.setLayer(layer)
        if layer is None:
            return
        names = {field.name().lower(): field.name() for field in layer.fields()}
        # the names the backend's reader detects on its own (swclip_core.data.samples)
        for candidate in ("image_path", "image", "path", "file", "filename", "photo"):
            if candidate in names:
                self.field_combo.setField(names[candidate])
                return

    def set_backend_python(self, path: str) -> None:
        if path.strip():
            QgsSettings().setValue(SETTING_KEY, path.strip())
        else:
            QgsSettings().remove(SETTING_KEY)

    def refresh_recent_runs(self) -> None:
        self.recent_list.clear()
        for run in recent_runs():
            item = QListWidgetItem(f"{run.get('time', '')}  {run.get('kind')}: {run.get('name')}")
            item.setToolTip(str(run.get("output", "")))
            item.setData(Qt.UserRole, run.get("model", ""))
            self.recent_list.addItem(item)

    def use_recent_run(self, item: QListWidgetItem) -> None:
        model = item.data(Qt.UserRole)
        if model:
            self.model_widget.setFilePath(model)

    # --- running -------------------------------------------------------------------------------

    def show_message(self, text: str) -> None:
        self.message_label.setText(text)

    def selected_input(self) -> tuple[QgsVectorLayer, str] | None:
        layer = self.layer_combo.currentLayer()
        field = self.field_combo.currentField()
        if not isinstance(layer, QgsVectorLayer) or not field:
            self.show_message(self.tr("Choose a point layer and the field with the image paths."))
            return None
        return layer, field

    def export_selected(self, layer: QgsVectorLayer, field: str) -> Path | None:
        """The layer as a GeoPackage for the worker (main thread: it reads the layer)."""
        folder = Path(tempfile.mkdtemp(prefix="swclip-panel-"))
        try:
            report = export_points(
                layer, field, folder / "samples.gpkg", base_dir=layer_file_dir(layer)
            )
        except (ValueError, OSError) as error:
            self.show_message(str(error))
            return None
        if report.written == 0:
            self.show_message(self.tr("The layer has no feature with a geometry and an image."))
            return None
        return report.path

    def start(self, description: str, command: str, args: list, on_done) -> None:
        self.task = WorkerTask(description, command, args, on_done)
        self.task.progressChanged.connect(lambda value: self.progress_bar.setValue(int(value)))
        self.set_busy(True)
        self.show_message(description + " ...")
        QgsApplication.taskManager().addTask(self.task)

    def set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.localize_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.progress_bar.setValue(0)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def start_training(self) -> None:
        chosen = self.selected_input()
        out = self.new_model_widget.filePath().strip()
        if chosen is None:
            return
        if not out:
            self.show_message(self.tr("Choose a new folder for the model."))
            return
        samples = self.export_selected(*chosen)
        if samples is None:
            return
        args = [samples, "--layer", "samples", "--image-column", "image_path",
                "--id-column", "sample_id", "--out", out,
                "--objective", self.objective_combo.currentText(),
                "--epochs", self.epochs_spin.value()]  # fmt: skip
        self.start(self.tr("SW-CLIP: training {}").format(Path(out).name), "train", args,
                   self.training_done)  # fmt: skip

    def training_done(self, task: WorkerTask) -> None:
        self.set_busy(False)
        self.task = None
        if task.exception is not None:
            self.show_message(self.tr("Training failed: {}").format(task.exception))
            return
        out = str(task.result_message["options"]["out"])
        self.model_widget.setFilePath(out)
        remember_run({"kind": "model", "name": Path(out).name, "model": out, "output": out,
                      "time": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
        self.refresh_recent_runs()
        self.show_message(self.tr("Model trained: {}").format(out))

    def start_localizing(self) -> None:
        chosen = self.selected_input()
        model = self.model_widget.filePath().strip()
        if chosen is None:
            return
        if not model:
            self.show_message(self.tr("Choose a trained model folder (or train one)."))
            return
        layer, field = chosen
        samples = self.export_selected(layer, field)
        if samples is None:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(model) / "predictions" / f"{layer.name()}-{stamp}.gpkg"
        run_name = f"SW-CLIP {layer.name()} {stamp}"
        args = [samples, "--layer", "samples", "--image-column", "image_path",
                "--id-column", "sample_id", "--model", model, "--out", out,
                "--out-crs", crs_argument(layer.crs())]  # fmt: skip

        def done(task: WorkerTask) -> None:
            self.localizing_done(task, run_name, model)

        self.start(run_name, "predict", args, done)

    def localizing_done(self, task: WorkerTask, run_name: str, model: str) -> None:
        self.set_busy(False)
        self.task = None
        if task.exception is not None:
            self.show_message(self.tr("Localizing failed: {}").format(task.exception))
            return
        out = Path(task.result_message["options"]["out"])
        project = QgsProject.instance()
        try:
            for name in OUTPUT_LAYERS:  # added in order: points on top of lines
                layer = load_gpkg_layer(out, name, name.replace("_", " "))
                apply_style(layer, name)
                add_to_group(project, layer, run_name)
        except OSError as error:
            self.show_message(str(error))
            return
        remember_run({"kind": "localize", "name": run_name, "model": model, "output": str(out),
                      "time": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
        self.refresh_recent_runs()
        self.show_message(self.tr("Localized: layers in the group {}").format(run_name))
