"""Find the backend Python that runs ``swclip_core`` outside QGIS's own interpreter.

torch and its dependencies are never imported into QGIS (see docs/architecture.md): the plugin
drives a separate Python instead. This module decides which one, in this order:

1. the QGIS setting ``swclip/backend_python``;
2. the environment variable ``SWCLIP_PYTHON``;
3. in an installed plugin, the environment that *Create backend environment* makes in the QGIS
   profile; in a source checkout, the checkout's ``.venv`` (as ``make setup`` creates it).

An explicit choice (1 or 2) is the only one tried: if the analyst named a Python, silently
running a different one would hide their mistake.
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404: the backend is a separate interpreter by design
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

SETTING_KEY = "swclip/backend_python"
CACHE_SETTING_KEY = "swclip/cache_dir"  # the backend's feature cache (SWCLIP_CACHE_DIR)
ENV_VAR = "SWCLIP_PYTHON"
PROBE_TIMEOUT_S = 60.0
NO_BACKEND = "No usable SW-CLIP backend Python"  # how find_backend's message begins

# The packages the worker cannot run without; looked up, not imported (torch takes seconds).
REQUIRED_PACKAGES = ("torch", "open_clip", "geopandas", "pyogrio", "rasterio")
# The answer is JSON on the last stdout line, so anything printed while importing is ignored.
# swclip_core itself always imports (PYTHONPATH has the plugin's own copy, see child_environment):
# what the interpreter must bring is its dependencies.
_PROBE_CODE = (
    "import importlib.util, json, sys, swclip_core\n"
    f"missing = [m for m in {REQUIRED_PACKAGES!r} if importlib.util.find_spec(m) is None]\n"
    "if missing: sys.exit('it lacks the package(s) ' + ', '.join(missing))\n"
    "print(json.dumps({'version': swclip_core.__version__}))"
)


class BackendNotFound(Exception):
    """No usable backend Python; the message says what was tried and how to fix it."""


@dataclass(frozen=True)
class BackendInfo:
    """A Python interpreter that imports ``swclip_core``.

    Attributes:
        python: path of the interpreter as it must be launched (venv paths are not resolved,
            since resolving a venv's symlink would leave the venv).
        version: ``swclip_core.__version__`` as that interpreter reports it.
    """

    python: str
    version: str


def plugin_dir() -> Path:
    """Folder of this plugin, with symlinks resolved so a linked checkout finds its own venv."""
    return Path(__file__).resolve().parent


BUNDLE_FOLDER = "bundled"


def bundle_root() -> Path:
    """Folder holding ``swclip_core``, ``resources`` and ``requirements.txt``.

    The plugin zip carries them in ``<plugin>/bundled`` (see ``make package``); a source checkout
    has them next to the plugin folder.
    """
    bundled = plugin_dir() / BUNDLE_FOLDER
    return bundled if (bundled / "swclip_core").is_dir() else plugin_dir().parent


def resources_dir() -> Path:
    """The ``resources`` folder (QML styles, icon, sample data) of the bundle or checkout."""
    return bundle_root() / "resources"


def default_backend_dir() -> Path:
    """Where "Create backend environment" puts its venv: in the QGIS profile, per user."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "swclip" / "backend-venv"


def venv_python(venv_dir: Path) -> Path:
    """The interpreter of a virtual environment."""
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def checkout_venv_python() -> Path:
    """Interpreter of the ``.venv`` next to the plugin folder in a source checkout."""
    return venv_python(plugin_dir().parent / ".venv")


def backend_choice() -> tuple[str, str]:
    """The interpreter :func:`find_backend` will try, and where that choice comes from: the
    setting, the environment variable, else the environment that Create backend environment
    makes (an installed plugin) or the source checkout's ``.venv``."""
    configured = _configured_python()
    if configured is not None:
        return configured
    if (plugin_dir() / BUNDLE_FOLDER / "swclip_core").is_dir():
        created = venv_python(default_backend_dir())
        return str(created), "the environment of Create backend environment"
    return str(checkout_venv_python()), "the source checkout's virtual environment"


def _configured_python() -> tuple[str, str] | None:
    """The explicitly chosen interpreter and where the choice came from, if any."""
    configured = QgsSettings().value(SETTING_KEY, "", type=str).strip()
    if configured:
        return configured, f"the QGIS setting '{SETTING_KEY}'"
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return from_env, f"the environment variable {ENV_VAR}"
    return None


def child_environment() -> dict[str, str]:
    """Environment for the backend process.

    QGIS installers on Windows and macOS set PYTHONHOME for their bundled Python; a different
    interpreter that inherited it would load the wrong standard library and fail to start.
    """
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    # QGIS's own PYTHONPATH (its plugins, its site-packages) must not shadow the backend's; the
    # swclip_core that came with this plugin goes first, so plugin and worker always speak the
    # same protocol (in a source checkout: the checkout's own code, not another install's).
    env.update(backend_variables())
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", TQDM_DISABLE="1")
    return env


def backend_variables() -> dict[str, str]:
    """The environment variables the backend needs beyond its interpreter: ``PYTHONPATH``, and
    ``SWCLIP_CACHE_DIR`` when the cache folder setting is set."""
    variables = {"PYTHONPATH": str(bundle_root())}
    cache = QgsSettings().value(CACHE_SETTING_KEY, "", type=str).strip()
    if cache:
        variables["SWCLIP_CACHE_DIR"] = cache
    return variables


def probe(python: str, timeout: float = PROBE_TIMEOUT_S) -> BackendInfo:
    """Run ``python`` and ask it for ``swclip_core``'s version.

    Raises:
        BackendNotFound: the interpreter does not start, times out, or cannot import
            ``swclip_core``; the message gives the reason in one line.
    """
    # `python -c` puts the working directory first on sys.path: an empty one makes the answer
    # depend on the interpreter's own environment, not on the folder QGIS was started from.
    with tempfile.TemporaryDirectory(prefix="swclip-probe-") as empty_dir:
        try:
            completed = subprocess.run(  # nosec B603: argument list, no shell; user's own Python
                [python, "-c", _PROBE_CODE],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=child_environment(),
                cwd=empty_dir,
                check=False,
                # Keep a console window from flashing up on Windows; 0 elsewhere.
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except OSError as error:
            raise BackendNotFound(
                f"{python}: cannot be started ({error.strerror or error})"
            ) from None
        except subprocess.TimeoutExpired:
            raise BackendNotFound(f"{python}: did not answer within {timeout:g} s") from None
    if completed.returncode != 0:
        stderr_lines = completed.stderr.strip().splitlines()
        reason = stderr_lines[-1] if stderr_lines else f"exit code {completed.returncode}"
        raise BackendNotFound(f"{python}: {reason}")
    try:
        answer = json.loads(completed.stdout.strip().splitlines()[-1])
        return BackendInfo(python=python, version=str(answer["version"]))
    except (IndexError, ValueError, KeyError, TypeError):
        raise BackendNotFound(
            f"{python}: unexpected answer {completed.stdout.strip()[:200]!r}"
        ) from None


def _setup_hint(venv_python: Path) -> str:
    """How to create a backend, worded for a source checkout or an installed plugin."""
    root = venv_python.parent.parent.parent
    if (root / "Makefile").is_file():
        return f"run `make setup` in the SW-CLIP source folder {root} to create {venv_python}"
    return (
        "run the Processing algorithm SW-CLIP > Setup > Create backend environment, which "
        f"creates one in {default_backend_dir()} and sets the setting"
    )


def find_backend(timeout: float = PROBE_TIMEOUT_S) -> BackendInfo:
    """Return the backend Python to use, checked by actually importing ``swclip_core`` in it.

    Raises:
        BackendNotFound: naming the interpreter tried, why it failed, and how to fix it.
    """
    venv_python = checkout_venv_python()
    python, source = backend_choice()
    try:
        return probe(python, timeout)
    except BackendNotFound as error:
        raise BackendNotFound(
            f"{NO_BACKEND}. Tried {source}: {error}\n"
            f"To fix it, set the QGIS setting '{SETTING_KEY}' (or the environment variable "
            f"{ENV_VAR}) to the full path of a Python interpreter in which "
            "`import swclip_core` works, or clear both and "
            f"{_setup_hint(venv_python)}."
        ) from None
