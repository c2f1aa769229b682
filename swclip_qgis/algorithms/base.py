"""One base class for the SW-CLIP Processing algorithms: shared parameters, backend calls, styling.

Every algorithm is QGIS glue around one ``swclip`` command run by the worker in the backend Python
(:func:`swclip_qgis.runner.run_worker`): export the input layer, run, load the results.
"""

from __future__ import annotations

import configparser
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..backend import BackendNotFound, find_backend, plugin_dir
from ..layers import check_image_field, export_points, guess_image_field, layer_file_dir
from ..runner import WorkerFailed, command_line, run_worker
from ..vector_io import export_layer
from .output_loading import OutputGroup, style_when_loaded

# swclip_core.config.METHODS (QGIS must not import the backend); a test keeps them equal.
RETRIEVAL_METHODS = ("mode", "weighted", "top1")
MODE_RADIUS_M = 5000.0
DEVICES = ("auto", "cpu", "cuda")
# swclip_core.config.PRECISIONS after "default" (no --precision: auto on a GPU, fp32 on a CPU); a
# test keeps them equal.
PRECISIONS = ("default", "auto", "fp32", "bf16", "fp16")
# The share of a run's progress bar given to exporting the input; the backend fills the rest.
EXPORT_SHARE = 5.0
BACKEND_SPAN = (EXPORT_SHARE, 100.0)


HELP_ANCHOR = "#the-qgis-plugin"  # README.md's section on the plugin


def help_url() -> str:
    """The README section on the plugin, at the homepage named in the plugin's metadata."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(plugin_dir() / "metadata.txt", encoding="utf-8")
    homepage = metadata.get("general", "homepage", fallback="").strip()
    return homepage + HELP_ANCHOR if homepage else ""


class SwclipAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms; subclasses set the class attributes and two methods."""

    ALGORITHM_NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    HELP = ""

    INPUT = "INPUT"
    IMAGE_FIELD = "IMAGE_FIELD"
    MODEL = "MODEL"
    GALLERY = "GALLERY"
    FUSE = "FUSE"
    KNN_WEIGHT = "KNN_WEIGHT"
    TOP_K = "TOP_K"
    METHOD = "METHOD"
    MODE_RADIUS = "MODE_RADIUS"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    RUN_NAME = "RUN_NAME"
    REGIONS = "REGIONS"
    REGION_FIELD = "REGION_FIELD"
    STREETS = "STREETS"
    STREET_FIELD = "STREET_FIELD"

    def __init__(self) -> None:
        super().__init__()

    # --- identity ------------------------------------------------------------------------------

    def tr(self, text: str) -> str:
        """Translate ``text`` in this algorithm's context."""
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> SwclipAlgorithm:
        return type(self)()

    def name(self) -> str:
        return self.ALGORITHM_NAME

    def displayName(self) -> str:
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP_ID

    def shortHelpString(self) -> str:
        return self.tr(self.HELP)

    def icon(self) -> QIcon:
        return QIcon(str(plugin_dir() / "icon.svg"))

    def svgIconPath(self) -> str:
        return str(plugin_dir() / "icon.svg")

    def helpUrl(self) -> str:
        return help_url()

    # --- parameter factories -------------------------------------------------------------------

    def add_advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        """Add an expert parameter, folded away under "Advanced parameters"."""
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def add_metres(
        self,
        name: str,
        label: str,
        default: float,
        *,
        minimum: float = 0.0,
        advanced: bool = False,
    ) -> None:
        """A decimal parameter (metres, or another real number) with a lower bound."""
        parameter = QgsProcessingParameterNumber(
            name,
            self.tr(label),
            type=QgsProcessingParameterNumber.Double,
            minValue=minimum,
            defaultValue=default,
        )
        if advanced:
            self.add_advanced(parameter)
        else:
            self.addParameter(parameter)

    def add_photo_layer(self, description: str = "Point layer of photos") -> None:
        """The input point layer and the field holding its image paths."""
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr(description), [QgsProcessing.TypeVectorPoint]
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.IMAGE_FIELD,
                self.tr("Image path field (empty: the field whose values are image files)"),
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.String,
                optional=True,
            )
        )

    def add_joins(self) -> None:
        """Optional regions and streets layers whose names fill the photos' region and street
        (the location captions), as ``swclip``'s spatial joins do."""
        for layer, field, label, field_label, kinds in (
            (self.REGIONS, self.REGION_FIELD, "Region polygons (names fill each photo's region)",
             "Region name field (empty: detected)", [QgsProcessing.TypeVectorPolygon]),
            (self.STREETS, self.STREET_FIELD, "Named streets (lines or points; fill each photo's "
             "street)", "Street name field (empty: detected)",
             [QgsProcessing.TypeVectorLine, QgsProcessing.TypeVectorPoint]),
        ):  # fmt: skip
            self.addParameter(
                QgsProcessingParameterFeatureSource(layer, self.tr(label), kinds, optional=True)
            )
            self.addParameter(
                QgsProcessingParameterField(
                    field,
                    self.tr(field_label),
                    parentLayerParameterName=layer,
                    optional=True,
                )
            )

    def join_args(
        self, parameters: dict[str, Any], context: QgsProcessingContext, folder: Path
    ) -> list[Any]:
        """The ``--regions``/``--streets`` arguments of the layers :meth:`add_joins` offers,
        each exported to a GeoPackage in ``folder``."""
        args: list[Any] = []
        for layer, field, name, field_option in (
            (self.REGIONS, self.REGION_FIELD, "regions", "--region-field"),
            (self.STREETS, self.STREET_FIELD, "streets", "--street-field"),
        ):
            source = self.parameterAsSource(parameters, layer, context)
            if source is None:
                continue
            path = folder / f"{name}.gpkg"
            try:
                export_layer(source, path, name)
            except OSError as error:
                raise QgsProcessingException(str(error)) from None
            args += [f"--{name}", path, f"--{name}-layer", name]
            chosen = self.parameterAsString(parameters, field, context)
            if chosen:
                args += [field_option, chosen]
        return args

    def add_predictions_layer(self) -> None:
        """The input: a predictions point layer written by Localize layer."""
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT,
                self.tr("Predictions (point layer from Localize layer)"),
                [QgsProcessing.TypeVectorPoint],
            )
        )

    def add_model_folder(self) -> None:
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                self.tr("Trained model folder (from Train model)"),
                behavior=QgsProcessingParameterFile.Folder,
            )
        )

    def add_gallery(self) -> None:
        self.addParameter(
            QgsProcessingParameterFile(
                self.GALLERY,
                self.tr("Gallery of candidate locations (empty: the model's training locations)"),
                behavior=QgsProcessingParameterFile.File,
                fileFilter="Locations (*.gpkg *.geojson *.shp *.csv)",
                optional=True,
            )
        )

    def add_retrieval(self) -> None:
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TOP_K, self.tr("Candidates per photo (top-K)"), minValue=1, defaultValue=5
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.METHOD,
                self.tr(
                    "Prediction (mode: the heaviest group of nearby candidates; weighted: the "
                    "weighted mean of all top-K; top1: the best candidate)"
                ),
                options=list(RETRIEVAL_METHODS),
                defaultValue=0,
            )
        )
        self.add_metres(
            self.MODE_RADIUS,
            "Group radius of the mode prediction (metres)",
            MODE_RADIUS_M,
            minimum=1.0,
            advanced=True,
        )

    def add_fusion(self) -> None:
        """Mixing an image-kNN model into the caption retrieval (``--fuse``, ``--knn-weight``)."""
        self.add_advanced(
            QgsProcessingParameterFile(
                self.FUSE,
                self.tr("Fuse with an image-kNN model (folder; Train model, objective image-knn)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                self.KNN_WEIGHT,
                self.tr("Image-kNN share, 0-1 (not set: chosen by cross-validation)"),
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
                maxValue=1.0,
            )
        )

    def add_runtime(self) -> None:
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.DEVICE,
                self.tr("Device (auto uses a GPU when there is one)"),
                options=list(DEVICES),
                defaultValue=0,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.PRECISION,
                self.tr(
                    "Precision (default: auto on a GPU, fp32 on a CPU; auto: float16/bfloat16 "
                    "on a GPU, bfloat16 on CPUs that compute it natively, else fp32)"
                ),
                options=list(PRECISIONS),
                defaultValue=0,
            )
        )

    def add_run_name(self) -> None:
        self.add_advanced(
            QgsProcessingParameterString(
                self.RUN_NAME,
                self.tr("Run name (layer group of the outputs; default: the model folder's name)"),
                optional=True,
            )
        )

    # --- helpers -------------------------------------------------------------------------------

    def predictions_source(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        required: tuple[str, ...],
    ):
        """The INPUT predictions layer, checked to carry the ``required`` fields."""
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        missing = [name for name in required if source.fields().indexOf(name) < 0]
        if missing:
            raise QgsProcessingException(
                self.tr(
                    "The predictions layer lacks the field(s) {}; use the Predicted points "
                    "output of Localize layer (or swclip predict)."
                ).format(", ".join(missing))
            )
        return source

    def work_dir(self) -> Path:
        """A fresh folder in QGIS's temporary folder for this run's intermediate files."""
        return Path(tempfile.mkdtemp(prefix="swclip-", dir=QgsProcessingUtils.tempFolder()))

    def export_input(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        folder: Path,
    ) -> tuple[Path, Any]:
        """The input layer as ``folder/samples.gpkg`` (see layers.export_points) and its CRS."""
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        base_dir = layer_file_dir(self.parameterAsVectorLayer(parameters, self.INPUT, context))
        image_field = self.parameterAsString(parameters, self.IMAGE_FIELD, context)
        if not image_field:
            image_field = guess_image_field(source, base_dir)
            if image_field is None:
                raise QgsProcessingException(
                    self.tr("The input layer has no text field of image paths.")
                )
            feedback.pushInfo(self.tr("Image path field: {}").format(image_field))
        try:
            check_image_field(source, image_field, base_dir)
            report = export_points(
                source,
                image_field,
                folder / "samples.gpkg",
                base_dir=base_dir,
                feedback=feedback,
                progress_share=EXPORT_SHARE,
            )
        except (ValueError, OSError) as error:
            raise QgsProcessingException(str(error)) from None
        for fid, reason in report.skipped[:10]:
            feedback.pushWarning(self.tr("feature {}: skipped ({})").format(fid, reason))
        if report.written == 0:
            raise QgsProcessingException(
                self.tr("The input layer has no feature with a geometry and an image path.")
            )
        feedback.pushInfo(
            self.tr("{} photos sent to the backend ({} skipped)").format(
                report.written, len(report.skipped)
            )
        )
        self.export_report = report
        return report.path, source.sourceCrs()

    def input_args(self, samples: Path) -> list[str]:
        """Command-line arguments that read a file written by :meth:`export_input`."""
        return [str(samples), "--layer", "samples", "--image-column", "image_path",
                "--id-column", "sample_id"]  # fmt: skip

    def retrieval_args(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list:
        method = RETRIEVAL_METHODS[self.parameterAsEnum(parameters, self.METHOD, context)]
        top_k = self.parameterAsInt(parameters, self.TOP_K, context)
        radius = self.parameterAsDouble(parameters, self.MODE_RADIUS, context)
        return ["--top-k", top_k, "--method", method, "--mode-radius-m", radius]

    def runtime_args(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list:
        args = ["--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]
        precision = PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)]
        return args if precision == "default" else [*args, "--precision", precision]

    def fusion_args(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list:
        knn_model = self.parameterAsFile(parameters, self.FUSE, context)
        if not knn_model:
            return []
        args = ["--fuse", knn_model]
        if parameters.get(self.KNN_WEIGHT) not in (None, ""):
            args += ["--knn-weight", self.parameterAsDouble(parameters, self.KNN_WEIGHT, context)]
        return args

    def gallery_args(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list:
        gallery = self.parameterAsFile(parameters, self.GALLERY, context)
        return ["--gallery", gallery] if gallery else []

    def output_group(
        self, parameters: dict[str, Any], context: QgsProcessingContext, *, follow_input: bool
    ) -> OutputGroup:
        """The group of this run's outputs: the run name when one is given; else, with
        ``follow_input``, the input layer's group (the predictions' run), else a new group."""
        follow = None
        if follow_input and not self.parameterAsString(parameters, self.RUN_NAME, context).strip():
            layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
            follow = layer.id() if layer is not None else None
        return OutputGroup(self.run_name(parameters, context), follow)

    def run_name(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        name = self.parameterAsString(parameters, self.RUN_NAME, context).strip()
        if name:
            return name
        model = self.parameterAsFile(parameters, self.MODEL, context)
        return f"SW-CLIP {Path(model).name}" if model else "SW-CLIP"

    def run_backend(
        self,
        command: str,
        args: list[Any],
        feedback: QgsProcessingFeedback,
        progress_span: tuple[float, float] = BACKEND_SPAN,
        shown_args: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``swclip COMMAND ARGS`` in the backend; failures become QgsProcessingException.

        The log gets the command line that reproduces the run in a shell, with ``shown_args``
        instead of ``args`` when the run writes to a staging place the user never sees.
        """
        try:
            python = find_backend().python
        except BackendNotFound as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(self.tr("Backend command (runs the same in a shell):"))
        feedback.pushCommandInfo(command_line(python, command, shown_args or args))
        try:
            return run_worker(command, args, feedback, python=python, progress_span=progress_span)
        except WorkerFailed as error:
            if error.cancelled:
                raise QgsProcessingException(self.tr("Cancelled; no output was written.")) from None
            raise QgsProcessingException(str(error)) from None

    def copy_to_sink(
        self,
        layer: QgsVectorLayer,
        parameters: dict[str, Any],
        output_name: str,
        context: QgsProcessingContext,
        crs: Any,
    ) -> str:
        """Copy a worker output layer into the Processing sink ``output_name``; its id."""
        sink, dest_id = self.parameterAsSink(
            parameters, output_name, context, layer.fields(), layer.wkbType(), crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, output_name))
        for feature in layer.getFeatures():
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        return dest_id

    def style_when_loaded(
        self, context: QgsProcessingContext, dest_id: str, style_name: str, group: OutputGroup
    ) -> None:
        """Style the output ``dest_id`` and put it in ``group`` once Processing loads it."""
        style_when_loaded(context, dest_id, style_name, group)
