"""The shape of the code: which modules may import what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Readers, geodesy and GIS outputs serve the QGIS backend checks and notebooks that never train:
# importing them must not pay torch's seconds of start-up.
LIGHT_MODULES = (
    "swclip_core",
    "swclip_core.geo",
    "swclip_core.io",
    "swclip_core.columns",
    "swclip_core.runs",
    "swclip_core.captions",
    "swclip_core.config",
    "swclip_core.data",
    "swclip_core.data.joins",
    "swclip_core.data.rasters",
    "swclip_core.data.samples",
    "swclip_core.data.splits",
    "swclip_core.data.synthetic",
    "swclip_core.galleries",
    "swclip_core.outputs",
    "swclip_core.surface",
)


def test_readers_geodesy_and_outputs_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    __import__(name)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
