"""The SW-CLIP dock panel: pick a photo layer, train or pick a model, localize, see the result.

Plain Qt widgets over the provider's own Processing algorithms (Train model, Localize layer, then
Region fairness choropleth when regions are chosen, and Create backend environment while there is
no usable backend): the dock fills in their parameters and runs them as a background task, so it
shares their export, checks, cancel, progress, layer names, styles and layer groups. Results are
loaded on the main thread by Processing's own result handler.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsFieldProxyModel,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .algorithms.train_model import DEFAULT_OBJECTIVE, OBJECTIVES
from .backend import NO_BACKEND, default_backend_dir
from .backend_box import BackendBox
from .files import CHECKPOINT
from .layers import guess_image_field, guess_name_field, layer_file_dir
from .runner import BACKEND_WARNING

RECENT_RUNS_KEY = "swclip/recent_runs"
MAX_RECENT_RUNS = 10
TRAIN_ALGORITHM = "swclip:trainmodel"
LOCALIZE_ALGORITHM = "swclip:localizelayer"
CREATE_BACKEND_ALGORITHM = "swclip:createbackend"
FAIRNESS_ALGORITHM = "swclip:fairnesschoropleth"


def figure(value: float, pattern: str) -> str:
    """``value`` formatted, or "n/a" where it is undefined (NaN: fewer than two regions)."""
    return "n/a" if math.isnan(value) else pattern.format(value)


def run_folder_name(*parts: str) -> str:
    """A new folder's name from ``parts`` and the time, safe on every file system."""
    name = "-".join([*parts, time.strftime("%Y%m%d-%H%M%S")])
    return re.sub(r"[^\w.-]+", "_", name)


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


class DockFeedback(QgsProcessingFeedback):
    """Processing feedback whose stage text ("epoch 2/5") reaches the dock as a signal, and
    which keeps the error that stopped the algorithm and the backend's own warnings."""

    progressTextChanged = pyqtSignal(str)

    def __init__(self) -> None:
        super().__init__()
        self.last_error = ""
        self.warnings: list[str] = []

    def pushWarning(self, warning: str) -> None:
        if warning.startswith(BACKEND_WARNING):  # not the skipped records' details
            self.warnings.append(warning[len(BACKEND_WARNING) :])
        super().pushWarning(warning)

    def setProgressText(self, text: str) -> None:
        self.progressTextChanged.emit(text)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.last_error = error
        super().reportError(error, fatalError)


class SwclipDock(QDockWidget):
    """Dock widget with the common workflow; see the module docstring."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("SW-CLIP", parent)
        self.setObjectName("SwclipDock")
        self.task: QgsProcessingAlgRunnerTask | None = None
        self.notes: list[str] = []  # the backend's warnings since the analyst's last click
        self.running: dict[str, Any] = {}  # what the finished task needs: context, feedback...
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
        self.objective_combo.setCurrentIndex(OBJECTIVES.index(DEFAULT_OBJECTIVE))
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
        # Optional: the errors per region as a choropleth, made from the predictions right after.
        self.regions_combo = QgsMapLayerComboBox()
        self.regions_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.regions_combo.setAllowEmptyLayer(True)
        self.regions_combo.setLayer(None)  # a polygon layer in the project is not a request
        self.regions_combo.setToolTip(
            self.tr("Also map how well each region's photos were localized (Region fairness "
                    "choropleth)")
        )  # fmt: skip
        self.region_field_combo = QgsFieldComboBox()
        self.region_field_combo.setFilters(QgsFieldProxyModel.String)
        self.regions_combo.layerChanged.connect(self.set_regions)
        self.set_regions(None)
        form.addRow(self.tr("Model folder"), self.model_widget)
        form.addRow(self.tr("Regions (optional)"), self.regions_combo)
        form.addRow(self.tr("Region name field"), self.region_field_combo)
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

        # Shown once there is a run: a first-time analyst sees the backend right below.
        self.recent_group = QGroupBox(self.tr("Recent runs"))
        self.recent_list = QListWidget()
        self.recent_list.setToolTip(self.tr("Double-click a run to localize with its model"))
        self.recent_list.itemActivated.connect(self.use_recent_run)
        # About six runs high, so that the backend below stays in view in a short dock.
        self.recent_list.setMaximumHeight(7 * self.recent_list.fontMetrics().height())
        QVBoxLayout(self.recent_group).addWidget(self.recent_list)
        layout.addWidget(self.recent_group)

        self.backend_box = BackendBox()
        self.backend_box.createRequested.connect(self.start_creating_backend)
        layout.addWidget(self.backend_box)
        layout.addStretch(1)
        # Scrolls rather than squeezes: a short dock would clip the wrapped labels.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # labels wrap to the width
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(body)
        # As wide as the widgets need, as without the scroll area; only the height scrolls.
        scroll.setMinimumWidth(
            body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
        )
        self.setWidget(scroll)
        if self.backend_box.offers_creation():
            self.show_message(
                self.tr(
                    "No backend Python yet: click Create backend environment below (it downloads "
                    "several GB and takes several minutes), or choose an existing one there."
                )
            )
        self.refresh_recent_runs()

    # --- settings and recent runs --------------------------------------------------------------

    def set_layer(self, layer: QgsVectorLayer | None) -> None:
        """Show the layer's text fields, the one holding image files chosen (by its values)."""
        self.field_combo.setLayer(layer)
        if isinstance(layer, QgsVectorLayer):
            guess = guess_image_field(layer, layer_file_dir(layer))
            if guess:
                self.field_combo.setField(guess)

    def set_regions(self, layer: QgsVectorLayer | None) -> None:
        """Offer the regions' text fields, the one the backend would take as names chosen."""
        self.region_field_combo.setLayer(layer)
        self.region_field_combo.setEnabled(isinstance(layer, QgsVectorLayer))
        if isinstance(layer, QgsVectorLayer):
            self.region_field_combo.setField(guess_name_field(layer) or "")

    def refresh_recent_runs(self) -> None:
        self.recent_list.clear()
        for run in recent_runs():
            item = QListWidgetItem(f"{run.get('time', '')}  {run.get('kind')}: {run.get('name')}")
            item.setToolTip(str(run.get("output", "")))
            item.setData(Qt.UserRole, run.get("model", ""))
            self.recent_list.addItem(item)
        self.recent_group.setVisible(self.recent_list.count() > 0)

    def use_recent_run(self, item: QListWidgetItem) -> None:
        model = item.data(Qt.UserRole)
        if model:
            self.model_widget.setFilePath(model)

    # --- running -------------------------------------------------------------------------------

    def show_message(self, text: str) -> None:
        """``text``, then the backend's warnings about this run (see :attr:`notes`)."""
        self.message_label.setText("\n".join([text, *(f"Warning: {n}" for n in self.notes)]))

    def selected_input(self) -> tuple[QgsVectorLayer, str] | None:
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsVectorLayer):
            self.show_message(self.tr("Choose a point layer of photos."))
            return None
        return layer, self.field_combo.currentField()

    def run_algorithm(
        self,
        algorithm_id: str,
        parameters: dict,
        on_done,
        cancelled: str | None = None,
        on_failed=None,
    ) -> None:
        """Run a Processing algorithm as a background task; ``on_done(results)`` afterwards,
        once Processing has loaded (styled, grouped) its output layers. ``cancelled``: what to
        say if the analyst cancels it (by default: that nothing was written); ``on_failed()``:
        what to tidy up if it fails or is cancelled."""
        algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        feedback = DockFeedback()
        # Bound methods of this widget: Qt queues the worker thread's signals to the main thread.
        feedback.progressChanged.connect(self.show_progress)
        feedback.progressTextChanged.connect(self.show_stage)
        self.task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
        self.running = {
            "context": context,
            "feedback": feedback,
            "algorithm": algorithm,
            "parameters": parameters,
            "on_done": on_done,
            "cancelled": cancelled or self.tr("Cancelled; no output was written."),
            "on_failed": on_failed or (lambda: None),
        }
        self.task.executed.connect(self.finished)
        self.set_busy(True)
        self.show_message(algorithm.displayName() + " ...")
        QgsApplication.taskManager().addTask(self.task)

    def show_progress(self, value: float) -> None:
        self.progress_bar.setValue(int(value))

    def show_stage(self, text: str) -> None:
        self.progress_bar.setFormat(f"%p %  {text}")

    def finished(self, ok: bool, results: dict) -> None:
        running, self.running, self.task = self.running, {}, None
        feedback = running["feedback"]
        self.notes += feedback.warnings
        # Loading the results reports progress of its own: the run's bar stays where it ended.
        feedback.progressChanged.disconnect(self.show_progress)
        self.set_busy(False)
        # A quick algorithm may not report progress at all: a success ends full either way.
        self.progress_bar.setValue(100 if ok else 0)
        feedback.progressTextChanged.disconnect(self.show_stage)
        if not ok:
            running["on_failed"]()
        if ok:
            from processing.gui.Postprocessing import handleAlgorithmResults

            # The dock chose the file names (predicted_points.gpkg ...): the layers are named
            # after their outputs ("Predicted points"), not after those files, which QGIS
            # prefers by default for outputs outside its temporary folder.
            context = running["context"]
            for layer_id in context.layersToLoadOnCompletion():
                context.layerToLoadOnCompletionDetails(layer_id).forceName = True
            handleAlgorithmResults(
                running["algorithm"], running["context"], feedback, False, running["parameters"]
            )
        elif feedback.isCanceled():
            self.show_message(running["cancelled"])
            return
        else:
            reason = feedback.last_error or self.tr("see View > Panels > Log Messages")
            self.show_message(self.tr("Failed: {}").format(reason))
            self.backend_box.show_choice(unusable=reason.startswith(NO_BACKEND))
            return
        running["on_done"](results)

    def set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.localize_button.setEnabled(not busy)
        self.backend_box.create_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress_bar.setFormat("%p %")
        if busy:
            self.progress_bar.setValue(0)

    def cancel(self) -> None:
        if self.running:
            self.running["feedback"].cancel()

    def start_creating_backend(self) -> None:
        self.notes = []
        parameters = {"OUTPUT": str(default_backend_dir())}
        # pip leaves what it installed: running it again completes the environment.
        cancelled = self.tr("Cancelled; click Create backend environment again to complete it.")
        self.run_algorithm(CREATE_BACKEND_ALGORITHM, parameters, self.backend_created, cancelled)

    def backend_created(self, results: dict) -> None:
        python = str(results["PYTHON"])
        self.backend_box.created(python)
        self.show_message(self.tr("Backend ready: {}").format(python))

    def start_training(self) -> None:
        self.notes = []
        chosen = self.selected_input()
        out = self.new_model_widget.filePath().strip()
        if chosen is None:
            return
        if not out:
            self.show_message(self.tr("Choose a new folder for the model."))
            return
        layer, field = chosen
        folder = Path(out)
        if folder.is_dir() and any(folder.iterdir()) and not (folder / CHECKPOINT).exists():
            # The picker offers existing folders: one that holds other things (other models, a
            # project) gets the model in a new folder inside it.
            folder /= run_folder_name(layer.name(), self.objective_combo.currentText())
        parameters = {"INPUT": layer, "IMAGE_FIELD": field, "OUTPUT": str(folder),
                      "OBJECTIVE": self.objective_combo.currentIndex(),
                      "EPOCHS": self.epochs_spin.value()}  # fmt: skip
        self.run_algorithm(TRAIN_ALGORITHM, parameters, self.training_done)

    def training_done(self, results: dict) -> None:
        out = str(results["OUTPUT"])
        self.model_widget.setFilePath(out)
        remember_run({"kind": "model", "name": Path(out).name, "model": out, "output": out,
                      "time": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
        self.refresh_recent_runs()
        self.show_message(self.tr("Model trained: {}").format(out))

    def start_localizing(self) -> None:
        self.notes = []
        chosen = self.selected_input()
        model = self.model_widget.filePath().strip()
        if chosen is None:
            return
        if not model:
            self.show_message(self.tr("Choose a trained model folder (or train one)."))
            return
        layer, field = chosen
        regions = self.regions_combo.currentLayer()
        region_field = self.region_field_combo.currentField()
        if regions is not None and not region_field:
            self.show_message(self.tr("Choose the field that names the regions."))
            return
        # Kept with the model, so a run's layers outlive the QGIS session.
        folder = Path(model) / "predictions" / run_folder_name(layer.name())
        folder.mkdir(parents=True, exist_ok=True)
        parameters = {"INPUT": layer, "IMAGE_FIELD": field, "MODEL": model}
        for name, file_name in (("OUTPUT_POINTS", "predicted_points.gpkg"),
                                ("OUTPUT_LINES", "error_lines.gpkg"),
                                ("OUTPUT_SKIPPED", "skipped_records.gpkg")):  # fmt: skip
            # loaded into the project when done, as from the Processing dialog
            parameters[name] = QgsProcessingOutputLayerDefinition(
                str(folder / file_name), QgsProject.instance()
            )

        def done(results: dict) -> None:
            stamp = time.strftime("%Y-%m-%d %H:%M")
            remember_run({"kind": "localize", "name": layer.name(), "model": model,
                          "output": str(folder), "time": stamp})  # fmt: skip
            self.refresh_recent_runs()
            localized = self.tr("Localized: the layers are in {}").format(folder)
            self.show_message(localized)
            if regions is not None:
                self.map_regions(results["OUTPUT_POINTS"], regions, region_field, folder, localized)

        def tidy() -> None:  # a failed or cancelled run leaves no empty folder in the model's
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

        self.run_algorithm(LOCALIZE_ALGORITHM, parameters, done, on_failed=tidy)

    def map_regions(
        self, points: str, regions: QgsVectorLayer, field: str, folder: Path, localized: str
    ) -> None:
        """The Region fairness choropleth of the predictions just written, into their group."""
        parameters = {
            "INPUT": points,
            "REGIONS": regions,
            "REGION_FIELD": field,
            "OUTPUT": QgsProcessingOutputLayerDefinition(
                str(folder / "region_choropleth.gpkg"), QgsProject.instance()
            ),
        }

        def done(results: dict) -> None:
            figures = self.tr(
                "{} regions hold photos; their median errors differ up to {}x (Gini of the "
                "regional mean errors {})."
            ).format(
                results["REGIONS_WITH_SAMPLES"],
                figure(results["MEDIAN_ERROR_MAX_MIN_RATIO"], "{:.1f}"),
                figure(results["MEAN_ERROR_GINI"], "{:.2f}"),
            )
            self.show_message(f"{localized}. {figures}")

        self.run_algorithm(FAIRNESS_ALGORITHM, parameters, done)
