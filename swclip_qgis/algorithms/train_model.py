"""``swclip:trainmodel``: train a model on a point layer of geo-tagged photos."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from ..files import CHECKPOINT, epochs_done, interrupted_trainings, staged
from .base import SwclipAlgorithm

# The objectives of `swclip train --objective` (swclip_core/objectives/registry.py), in menu order.
# New ones are appended: a saved Processing model keeps a choice as its position in this list.
OBJECTIVES = (
    "swclip",
    "clip",
    "semivariogram",
    "image-knn",
    "geoclip",
    "swgeo",
    "hybrid",
    "hybrid-infonce",
)
DEFAULT_OBJECTIVE = "swclip"  # swclip_core.config.TrainConfig's default
MODES = ("cached", "finetune")
KERNELS = ("exponential", "gaussian")
HYBRID_COMBINES = ("sum", "concat")
LAMBDA_NC, LAMBDA_FAIR = 0.5, 0.1  # swclip_core.config.TrainConfig's defaults


class TrainModelAlgorithm(SwclipAlgorithm):
    """Run ``swclip train`` on the input layer into a model folder."""

    ALGORITHM_NAME = "trainmodel"
    DISPLAY_NAME = "Train model"
    GROUP = "Model"
    GROUP_ID = "model"
    HELP = (
        "Trains a geo-localization model on a point layer of photos whose positions are known "
        "(any CRS; the image path field may hold paths relative to the layer's file).\n\n"
        "Objectives: swclip (location captions with spatially weighted soft labels, "
        "neighbourhood and fairness terms), clip (plain contrastive learning on location "
        "captions), semivariogram, image-knn (no training: the photos themselves are the "
        "gallery), geoclip (GeoCLIP's GPS encoder), swgeo (GeoCLIP's GPS encoder with the "
        "spatially weighted loss), hybrid (captions and GPS coordinates encoded together, "
        "spatially weighted loss) and hybrid-infonce (the same without spatial weights).\n\n"
        "The output folder holds config.json (every setting), checkpoint.pt, metrics.jsonl and "
        "train_samples.csv (the default gallery of Localize layer). It is written complete or "
        "not at all: cancelling leaves nothing behind. If QGIS closes or crashes during a "
        'training, the epochs done so far are kept aside: run again with "Continue an '
        'interrupted training" (advanced) and the same settings to go on from there.\n\n'
        "Optional region polygons and named streets fill each photo's region and street "
        "where the layer has none (`swclip train --regions/--streets`): the location captions "
        "then name the place.\n\n"
        "The log shows the `swclip train` command that reproduces the run in a shell.\n\n"
        "Advanced: the backbone (swclip-lite works offline; any open_clip model name with a "
        "pretrained tag or file), the spatial kernel (scale and cutoff in metres), the loss "
        "weights, batch size, device and seed."
    )

    OBJECTIVE = "OBJECTIVE"
    EPOCHS = "EPOCHS"
    BACKBONE = "BACKBONE"
    PRETRAINED = "PRETRAINED"
    MODE = "MODE"
    KERNEL = "KERNEL"
    HYBRID_COMBINE = "HYBRID_COMBINE"
    SCALE_M = "SCALE_M"
    CUTOFF_M = "CUTOFF_M"
    LAMBDA_NC = "LAMBDA_NC"
    LAMBDA_FAIR = "LAMBDA_FAIR"
    BATCH_SIZE = "BATCH_SIZE"
    SEED = "SEED"
    RESUME = "RESUME"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_photo_layer("Point layer of geo-tagged photos")
        self.addParameter(
            QgsProcessingParameterEnum(
                self.OBJECTIVE,
                self.tr("Objective"),
                options=list(OBJECTIVES),
                defaultValue=OBJECTIVES.index(DEFAULT_OBJECTIVE),
            )
        )
        self.add_joins()
        self.addParameter(
            QgsProcessingParameterNumber(self.EPOCHS, self.tr("Epochs"), minValue=1,
                                         defaultValue=30)
        )  # fmt: skip
        self.add_advanced(
            QgsProcessingParameterString(self.BACKBONE, self.tr("Backbone"),
                                         defaultValue="swclip-lite")
        )  # fmt: skip
        self.add_advanced(
            QgsProcessingParameterString(
                self.PRETRAINED,
                self.tr("Pretrained weights (open_clip tag or checkpoint file)"),
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.MODE,
                self.tr("Mode (cached: frozen image tower, for CPUs; finetune: for GPUs)"),
                options=list(MODES),
                defaultValue=0,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.KERNEL, self.tr("Spatial kernel"), options=list(KERNELS), defaultValue=0
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                self.HYBRID_COMBINE,
                self.tr("Hybrid objectives: combine caption and GPS embeddings by"),
                options=list(HYBRID_COMBINES),
                defaultValue=0,
            )
        )
        for name, label, default in (
            (self.SCALE_M, "Kernel scale (metres; 0 = automatic, from the points' spacing)", 0.0),
            (self.CUTOFF_M, "Kernel cutoff (metres; 0 = none)", 0.0),
            (self.LAMBDA_NC, "Weight of the neighbourhood-consistency term", LAMBDA_NC),
            (self.LAMBDA_FAIR, "Weight of the regional fairness term", LAMBDA_FAIR),
        ):
            self.add_metres(name, label, default, advanced=True)
        self.add_advanced(
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size"), minValue=2,
                                         defaultValue=64)
        )  # fmt: skip
        self.add_advanced(
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), defaultValue=0)
        )
        self.add_runtime()
        self.add_advanced(
            QgsProcessingParameterBoolean(
                self.RESUME,
                self.tr("Continue an interrupted training of this model folder (QGIS closed "
                        "or crashed during it; same settings)"),
                defaultValue=False,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Model folder"))
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        out = Path(self.parameterAsString(parameters, self.OUTPUT, context))
        if (out / CHECKPOINT).exists():
            raise QgsProcessingException(
                self.tr("{} already holds a trained model; choose another model folder").format(out)
            )
        # Checked now, not when the trained model is moved there: that would waste the training.
        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            raise QgsProcessingException(
                self.tr(
                    "{} is not an empty folder; the model needs a new or empty folder of its own "
                    "(for example {})"
                ).format(out, out / "model")
            )
        interrupted = interrupted_trainings(out)
        resumed = self.resumed_training(parameters, context, feedback, out, interrupted)
        folder = self.work_dir()
        samples, _crs = self.export_input(parameters, context, feedback, folder)
        value = self.parameterAsDouble
        args = [
            *self.input_args(samples),
            *self.join_args(parameters, context, folder),
            "--objective", OBJECTIVES[self.parameterAsEnum(parameters, self.OBJECTIVE, context)],
            "--epochs", self.parameterAsInt(parameters, self.EPOCHS, context),
            "--backbone", self.parameterAsString(parameters, self.BACKBONE, context),
            "--mode", MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            "--kernel", KERNELS[self.parameterAsEnum(parameters, self.KERNEL, context)],
            "--hybrid-combine",
            HYBRID_COMBINES[self.parameterAsEnum(parameters, self.HYBRID_COMBINE, context)],
            "--scale-m", value(parameters, self.SCALE_M, context) or "auto",
            "--cutoff-m", value(parameters, self.CUTOFF_M, context) or "none",
            "--lambda-nc", value(parameters, self.LAMBDA_NC, context),
            "--lambda-fair", value(parameters, self.LAMBDA_FAIR, context),
            "--batch-size", self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "--seed", self.parameterAsInt(parameters, self.SEED, context),
            *self.runtime_args(parameters, context),
        ]  # fmt: skip
        pretrained = self.parameterAsString(parameters, self.PRETRAINED, context).strip()
        if pretrained:
            args += ["--pretrained", pretrained]
        # Train into a hidden sibling and rename it when complete: a cancelled, failed or killed
        # run leaves no folder that looks like a model. The command shown for a shell has no
        # --resume: a resumed run ends bit-identical to one never interrupted, so it reproduces
        # the model from scratch.
        resume = [] if resumed is None else ["--resume"]
        try:
            with staged(out, reuse=resumed) as staging:
                self.run_backend(
                    "train",
                    [*args, *resume, "--out", staging],
                    feedback,
                    shown_args=[*args, "--out", out],
                )
        except OSError as error:
            raise QgsProcessingException(
                self.tr("cannot move the trained model to {}: {}").format(out, error)
            ) from None
        feedback.pushInfo(self.tr("Model written to {}").format(out))
        for superseded in interrupted:
            if superseded != resumed:  # the model in ``out`` replaces what they held
                shutil.rmtree(superseded, ignore_errors=True)
        if out.resolve().is_relative_to(Path(QgsProcessingUtils.tempFolder()).resolve()):
            # Processing's default destination: an analyst would lose the training at exit.
            feedback.pushWarning(
                self.tr(
                    "This is Processing's temporary folder, which QGIS deletes when it closes: "
                    "copy the model folder elsewhere to keep it, or give Model folder a place of "
                    "your own next time."
                )
            )
        return {self.OUTPUT: str(out)}

    def resumed_training(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        out: Path,
        interrupted: list[Path],
    ) -> Path | None:
        """The interrupted training of ``out`` to continue, if asked for; else None, with a word
        about the one this run will replace."""
        resume = self.parameterAsBoolean(parameters, self.RESUME, context)
        if not interrupted:
            if resume:
                raise QgsProcessingException(
                    self.tr(
                        "There is no interrupted training of {} to continue (its epochs would "
                        "be in a hidden folder beside it); untick Continue an interrupted "
                        "training to start one"
                    ).format(out)
                )
            return None
        latest = interrupted[0]
        done = epochs_done(latest)
        if resume:
            feedback.pushInfo(
                self.tr("Continuing the interrupted training in {} after epoch {}").format(
                    latest, done
                )
            )
            return latest
        feedback.pushWarning(
            self.tr(
                "{} holds an interrupted training of this model folder ({} epochs done); this "
                "run starts afresh and replaces it when it finishes. To go on from there "
                "instead, cancel and run again with Continue an interrupted training (advanced)."
            ).format(latest, done)
        )
        return None
