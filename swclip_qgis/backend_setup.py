"""Create a backend environment for an installed plugin: a venv with swclip_core's requirements.

The venv is made with ``--system-site-packages`` (so a Debian/OSGeo4W Python keeps its GDAL), gets
the pinned ``requirements.txt`` of the bundled ``swclip_core`` through pip, and sees the bundled
``swclip_core`` itself through a ``.pth`` file, so updating the plugin updates the backend code.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404: the backend is a separate interpreter by design
import sys
from pathlib import Path

from qgis.core import QgsSettings

from .backend import (
    SETTING_KEY,
    BackendInfo,
    bundle_root,
    child_environment,
    probe,
    venv_python,
)
from .runner import Feedback, WorkerFailed, run_logged

PTH_NAME = "swclip_bundle.pth"


def base_python() -> str:
    """A Python interpreter to create the venv from.

    Inside QGIS ``sys.executable`` is often QGIS itself (Windows, macOS), not a Python.
    """
    executable = Path(sys.executable)
    if executable.name.lower().startswith("python"):
        return str(executable)
    if os.name == "nt":
        candidate = Path(sys.exec_prefix) / "python.exe"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("python3") or shutil.which("python")
    if found is None:
        raise WorkerFailed(
            "no Python interpreter found to create the backend from; install Python 3.10+ "
            "and run this algorithm again, or give its path as the base Python",
            exit_code=None,
        )
    return found


def bundled_requirements() -> Path:
    """The pinned requirements of the bundled (or checkout's) swclip_core."""
    return bundle_root() / "requirements.txt"


def site_packages(python: Path) -> Path:
    """The purelib folder of ``python``'s environment."""
    completed = subprocess.run(  # nosec B603: argument list, no shell; the venv just created
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        env=child_environment(),
        check=True,
        timeout=60,
        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
    )
    return Path(completed.stdout.strip().splitlines()[-1])


def create_backend(
    venv_dir: Path,
    feedback: Feedback,
    *,
    base: str | None = None,
    requirements: Path | None = None,
) -> BackendInfo:
    """Create (or complete) the backend venv in ``venv_dir`` and make it the plugin's backend.

    Raises:
        WorkerFailed: a step failed (its output is in the message) or was cancelled.
        BackendNotFound: the finished venv still cannot import swclip_core.
    """
    venv_dir = Path(venv_dir)
    requirements = Path(requirements or bundled_requirements())
    if not requirements.is_file():
        raise WorkerFailed(f"{requirements} is missing; reinstall the plugin", exit_code=None)
    python = venv_python(venv_dir)
    if not python.exists():
        _stage(feedback, "creating the environment")
        feedback.pushInfo(f"Creating the virtual environment {venv_dir}")
        run_logged([base or base_python(), "-m", "venv", "--system-site-packages", venv_dir],
                   feedback)  # fmt: skip
    feedback.setProgress(10)
    _stage(feedback, "installing torch & co. (several minutes)")
    feedback.pushInfo(f"Installing {requirements} (this can take several minutes)")
    run_logged(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-r", requirements],
        feedback,
    )
    feedback.setProgress(90)
    (site_packages(python) / PTH_NAME).write_text(f"{bundle_root()}\n", encoding="utf-8")
    _stage(feedback, "checking the environment")
    info = probe(str(python))
    QgsSettings().setValue(SETTING_KEY, str(python))
    feedback.setProgress(100)
    return info


def _stage(feedback: Feedback, text: str) -> None:
    """Name the step in the progress bar (the dock's; Processing's dialog logs it), where the
    feedback has one: pip's minutes at one percentage should not look like a hang."""
    if hasattr(feedback, "setProgressText"):
        feedback.setProgressText(text)
