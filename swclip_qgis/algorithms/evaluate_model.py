"""``swclip:evaluate``: the Table-1 figures of a model on photos with known positions."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
)

from ..files import staged
from .base import SwclipAlgorithm

PROTOCOLS = ("closed", "open")
# The columns of the SW-CLIP paper's Table 1, as swclip_core.evaluation.TABLE1_COLUMNS names them.
TABLE1 = (
    ("median_error_m", "Median error (m)"),
    ("mean_error_m", "Mean error (m)"),
    ("r_at_1", "R@1"),
    ("geo_align", "Geo-Align"),
    ("ssi", "SSI"),
    ("city_align", "City-Align"),
)


def format_figure(key: str, value: Any) -> str:
    """A figure for the report: metres without decimals, ratios with three; n/a when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key.endswith("_m"):
        return f"{value:,.0f}"
    if key.startswith("acc_"):
        return f"{100 * value:.0f} %"
    return f"{value:.3f}"


def seen_note(context: dict[str, Any]) -> str:
    """A warning paragraph when photos that trained the model were scored, else nothing."""
    seen = context.get("photos_seen_in_training") or 0
    if not seen:
        return ""
    return (
        f"<p><strong>{seen:,} of the evaluated photos trained this model</strong>: these "
        "figures measure how well it fits them, not how well it localizes new photos.</p>"
    )


def html_report(summary: dict[str, Any], context: dict[str, Any], title: str) -> str:
    """A self-contained HTML page: the Table-1 row, the accuracy radii and the run's context."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE1)
    row = "".join(f"<td>{format_figure(k, summary.get(k))}</td>" for k, _ in TABLE1)
    accuracy = "".join(
        f"<tr><td>within {html.escape(k.removeprefix('acc_'))}</td>"
        f"<td>{format_figure(k, v)}</td></tr>"
        for k, v in summary.items()
        if k.startswith("acc_")
    )
    setting = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in context.items()
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:4px 10px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{seen_note(context)}"
        f"<h2>Table 1 figures</h2><table><tr><th>method</th>{head}</tr>"
        f"<tr><td>{html.escape(str(context.get('objective', '')))}</td>{row}</tr></table>"
        f"<h2>Accuracy</h2><table>{accuracy}</table>"
        f"<h2>Setting</h2><table>{setting}</table></body></html>\n"
    )


class EvaluateAlgorithm(SwclipAlgorithm):
    """Run ``swclip evaluate`` and write an HTML or JSON report."""

    ALGORITHM_NAME = "evaluate"
    DISPLAY_NAME = "Evaluate"
    GROUP = "Model"
    GROUP_ID = "model"
    HELP = (
        "Scores a trained model on a point layer of photos whose positions are known and "
        "writes a report with the columns of the SW-CLIP paper's Table 1: median and mean "
        "error (metres), R@1, Geo-Align, SSI and City-Align, plus the share of photos within "
        "25 m ... 2500 km.\n\n"
        "Protocol closed: the gallery is the evaluated photos' own location captions (R@1 and "
        "Geo-Align are defined). Protocol open: the gallery is the chosen file or the model's "
        "training locations (errors only); an image-kNN model can be fused in (advanced, "
        "open protocol only, as in Localize layer).\n\n"
        "The report is HTML (.html) or JSON (.json), by the file's extension."
    )

    PROTOCOL = "PROTOCOL"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_photo_layer("Point layer of photos with known positions")
        self.add_model_folder()
        self.addParameter(
            QgsProcessingParameterEnum(
                self.PROTOCOL, self.tr("Protocol"), options=list(PROTOCOLS), defaultValue=0
            )
        )
        self.add_gallery()
        self.add_retrieval()
        self.add_fusion()
        self.add_runtime()
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, self.tr("Report"), fileFilter="HTML (*.html);;JSON (*.json)"
            )
        )
        for key, label in TABLE1:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), self.tr(label)))

    def checkParameterValues(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        # A gallery or an image-kNN model means the open protocol: refused here, in the dialog,
        # rather than by the backend after the layer was exported.
        closed = PROTOCOLS[self.parameterAsEnum(parameters, self.PROTOCOL, context)] == "closed"
        if closed and (
            self.parameterAsFile(parameters, self.GALLERY, context)
            or self.parameterAsFile(parameters, self.FUSE, context)
        ):
            return False, self.tr(
                "A gallery and an image-kNN model are used by the open protocol only: set "
                "Protocol to open, or clear them"
            )
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        folder = self.work_dir()
        samples, _crs = self.export_input(parameters, context, feedback, folder)
        figures_path = folder / "figures.json"
        protocol = PROTOCOLS[self.parameterAsEnum(parameters, self.PROTOCOL, context)]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        self.run_backend(
            "evaluate",
            [
                *self.input_args(samples),
                "--model", model,
                "--protocol", protocol,
                "--json", figures_path,
                *self.gallery_args(parameters, context),
                *self.retrieval_args(parameters, context),
                *self.fusion_args(parameters, context),
                *self.runtime_args(parameters, context),
            ],
            feedback,
        )  # fmt: skip
        figures = json.loads(figures_path.read_text(encoding="utf-8"))
        summary, run = figures.get("summary", {}), figures.get("context", {})
        out = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        if out.suffix.lower() == ".json":
            text = json.dumps(figures, indent=2) + "\n"
        else:
            text = html_report(summary, run, f"SW-CLIP evaluation of {Path(model).name}")
        with staged(out) as partial:
            partial.write_text(text, encoding="utf-8")
        results: dict[str, Any] = {self.OUTPUT: str(out)}
        for key, label in TABLE1:
            value = summary.get(key)
            results[key.upper()] = float("nan") if value is None else float(value)
            feedback.pushInfo(f"{label}: {format_figure(key, value)}")
        return results
