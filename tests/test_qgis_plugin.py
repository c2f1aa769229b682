"""The QGIS plugin loads, registers its Processing provider, finds the backend and stays light.

Runs inside QGIS through pytest-qgis (``qgis_iface``, ``qgis_processing`` fixtures).
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsSettings,
)

import swclip_qgis
from swclip_qgis.algorithms.check_backend import CheckBackendAlgorithm
from swclip_qgis.backend import (
    ENV_VAR,
    SETTING_KEY,
    BackendNotFound,
    find_backend,
    probe,
)

from .conftest import REPO

PLUGIN_DIR = REPO / "swclip_qgis"
VENV_PYTHON = REPO / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
HEAVY_MODULES = {"torch", "torchvision", "open_clip", "timm", "transformers", "swclip_core"}


def core_version_from_source() -> str:
    """swclip_core.__version__ read from its source file, without importing it."""
    tree = ast.parse((REPO / "swclip_core" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("swclip_core/__init__.py defines no __version__")


@pytest.fixture()
def no_backend_choice(monkeypatch: pytest.MonkeyPatch):
    """Neither the QGIS setting nor the environment variable names a backend."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    QgsSettings().remove(SETTING_KEY)
    yield
    QgsSettings().remove(SETTING_KEY)


@pytest.fixture()
def loaded_plugin(qgis_iface, qgis_processing):
    """The plugin created the way QGIS does it, with initGui() called; unloaded afterwards."""
    plugin = swclip_qgis.classFactory(qgis_iface)
    plugin.initGui()
    yield plugin
    plugin.unload()


# --- packaging files ---------------------------------------------------------------------------


def test_plugin_folder_copies_match_their_sources() -> None:
    # qgis-plugin-ci reads <plugin_path>/metadata.txt and QGIS resolves icon= inside the plugin
    # folder, so these copies must not drift from the top-level sources.
    assert (PLUGIN_DIR / "metadata.txt").read_bytes() == (REPO / "metadata.txt").read_bytes()
    assert (PLUGIN_DIR / "icon.svg").read_bytes() == (REPO / "resources" / "icon.svg").read_bytes()


def test_plugin_menus_offer_exactly_the_backends_choices() -> None:
    # The plugin cannot import swclip_core (QGIS's Python has no torch), so it keeps copies of
    # the command line's choices; a drift would send the worker an option it refuses.
    from swclip_core import config
    from swclip_core.objectives.registry import REGISTRY
    from swclip_qgis.algorithms import base, train_model

    assert tuple(REGISTRY) == train_model.OBJECTIVES
    assert train_model.MODES == config.MODES
    assert train_model.KERNELS == config.KERNELS
    assert train_model.HYBRID_COMBINES == config.HYBRID_COMBINES
    assert config.TrainConfig().objective == train_model.DEFAULT_OBJECTIVE
    defaults = config.TrainConfig()
    assert defaults.lambda_nc == train_model.LAMBDA_NC
    assert defaults.lambda_fair == train_model.LAMBDA_FAIR
    assert defaults.kernel.scale_m is None and defaults.kernel.cutoff_m is None  # the plugin's 0
    assert base.RETRIEVAL_METHODS == config.METHODS  # the first is the default of both
    assert base.MODE_RADIUS_M == config.MODE_RADIUS_M
    assert base.PRECISIONS[1:] == config.PRECISIONS  # "default": no --precision
    from swclip_core.cli import WARNING_PREFIX
    from swclip_qgis.runner import BACKEND_WARNING

    assert BACKEND_WARNING == WARNING_PREFIX  # the dock shows the lines that begin so
    from swclip_core.columns import NAME_FIELDS
    from swclip_core.data.joins import _ONS_NAME
    from swclip_qgis import layers

    assert layers.NAME_FIELDS == NAME_FIELDS  # the dock names regions as --regions does
    assert (layers.ONS_NAME.pattern, layers.ONS_NAME.flags) == (_ONS_NAME.pattern, _ONS_NAME.flags)


def test_metadata_has_what_qgis_and_the_plugin_repository_need() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in (
        "name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
        "tracker", "repository", "homepage", "icon", "category", "tags", "changelog",
    ):  # fmt: skip
        assert key in general, key
    assert general["name"] == "SW-CLIP"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert general["category"] == "Analysis"
    assert general["version"] == core_version_from_source()
    assert (PLUGIN_DIR / general["icon"]).is_file()
    # qgis-plugin-ci needs the about text to start on the "about=" line itself.
    about_line = next(
        line for line in (REPO / "metadata.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("about=")
    )  # fmt: skip
    assert len(about_line) > len("about=") + 20


# --- QGIS's interpreter stays free of the ML stack ---------------------------------------------


def test_importing_the_plugin_adds_only_standard_library_modules() -> None:
    script = (
        "import json, sys\n"
        "import qgis.core, qgis.gui\n"
        "from qgis.PyQt import QtCore, QtGui, QtWidgets\n"
        "before = {name.split('.')[0] for name in sys.modules}\n"
        "import swclip_qgis, swclip_qgis.plugin, swclip_qgis.provider, swclip_qgis.backend\n"
        "import swclip_qgis.algorithms.check_backend\n"
        "after = {name.split('.')[0] for name in sys.modules}\n"
        "print(json.dumps({'new': sorted(after - before), 'all': sorted(after),\n"
        "                  'stdlib': sorted(sys.stdlib_module_names)}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not HEAVY_MODULES & set(modules["all"])
    stdlib = set(modules["stdlib"])
    foreign = [name for name in modules["new"] if name not in stdlib and name != "swclip_qgis"]
    assert foreign == []


def test_plugin_source_imports_only_qgis_and_the_standard_library() -> None:
    # Also catches imports inside functions, which importing the modules would not run.
    # processing: QGIS's own Processing plugin; osgeo: GDAL's bindings, which QGIS's Python
    # needs. Both are part of every QGIS installation.
    allowed = set(sys.stdlib_module_names) | {"qgis", "processing", "osgeo"}
    offenders = []
    for path in sorted(PLUGIN_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            offenders += [f"{path.name}: {root}" for root in roots if root not in allowed]
    assert offenders == []


# --- provider registration ---------------------------------------------------------------------


def test_init_gui_registers_provider_and_unload_removes_it(qgis_iface, qgis_processing) -> None:
    registry = QgsApplication.processingRegistry()
    plugin = swclip_qgis.classFactory(qgis_iface)
    assert registry.providerById("swclip") is None

    plugin.initGui()
    provider = registry.providerById("swclip")
    assert provider is not None
    assert provider.name() == "SW-CLIP"
    assert not provider.icon().isNull()
    algorithm = registry.algorithmById("swclip:checkbackend")
    assert algorithm is not None
    assert algorithm.displayName() == "Check backend"
    assert algorithm.shortHelpString()

    plugin.initProcessing()  # what qgis_process calls; must not register a second provider
    assert [p.id() for p in registry.providers()].count("swclip") == 1

    plugin.unload()
    assert registry.providerById("swclip") is None
    assert registry.algorithmById("swclip:checkbackend") is None


LOAD_WITH_QGIS_LOADER = """
import json, sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import qgis.utils
qgis.utils.plugin_paths = [sys.argv[1]]
sys.path.insert(0, sys.argv[1])  # QGIS Desktop does this for every plugin path
qgis.utils.updateAvailablePlugins()
report = {"available": list(qgis.utils.available_plugins),
          "name": qgis.utils.pluginMetadata("swclip_qgis", "name")}
report["loaded"] = qgis.utils.loadPlugin("swclip_qgis")
report["started"] = qgis.utils.startPlugin("swclip_qgis")
registry = QgsApplication.processingRegistry()
report["registered"] = registry.algorithmById("swclip:checkbackend") is not None
report["unloaded"] = qgis.utils.unloadPlugin("swclip_qgis")
report["left_behind"] = registry.providerById("swclip") is not None
print(json.dumps(report), flush=True)
app.exitQgis()
"""


def test_qgis_own_loader_starts_the_plugin_from_a_plugins_folder(tmp_path) -> None:
    # As after installing the zip: the plugin folder alone in a profile's plugins directory,
    # loaded by qgis.utils exactly as QGIS Desktop does, in a fresh interpreter.
    plugins = tmp_path / "plugins"
    shutil.copytree(
        PLUGIN_DIR, plugins / "swclip_qgis", ignore=shutil.ignore_patterns("__pycache__")
    )
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_QGIS_LOADER, str(plugins)],
        cwd=tmp_path,
        env={
            **os.environ,
            "QT_QPA_PLATFORM": "offscreen",
            "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {
        "available": ["swclip_qgis"],
        "name": "SW-CLIP",
        "loaded": True,
        "started": True,
        "registered": True,
        "unloaded": True,
        "left_behind": False,
    }


# --- backend discovery -------------------------------------------------------------------------


def test_check_backend_finds_the_checkout_venv(loaded_plugin, no_backend_choice) -> None:
    import processing  # importable once the qgis_processing fixture has run

    results = processing.run("swclip:checkbackend", {})
    assert results["VERSION"] == core_version_from_source()
    assert Path(results["PYTHON"]) == VENV_PYTHON


def test_setting_wins_over_environment_variable(no_backend_choice, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(VENV_PYTHON))
    QgsSettings().setValue(SETTING_KEY, "/nonexistent/setting/python")
    with pytest.raises(BackendNotFound, match="/nonexistent/setting/python"):
        find_backend()

    QgsSettings().remove(SETTING_KEY)
    assert find_backend().python == str(VENV_PYTHON)


def test_bogus_setting_says_how_to_fix_it(no_backend_choice, tmp_path) -> None:
    missing = tmp_path / "no-venv" / "bin" / "python"
    QgsSettings().setValue(SETTING_KEY, str(missing))
    with pytest.raises(BackendNotFound) as caught:
        find_backend()
    message = str(caught.value)
    assert str(missing) in message
    assert SETTING_KEY in message
    assert "make setup" in message
    assert str(VENV_PYTHON) in message


def test_bogus_environment_variable_fails_the_algorithm_clearly(
    no_backend_choice, monkeypatch, tmp_path
) -> None:
    missing = tmp_path / "python-that-is-not-there"
    monkeypatch.setenv(ENV_VAR, str(missing))
    algorithm = CheckBackendAlgorithm()
    algorithm.initAlgorithm()
    with pytest.raises(QgsProcessingException) as caught:
        algorithm.processAlgorithm({}, QgsProcessingContext(), QgsProcessingFeedback())
    message = str(caught.value)
    assert ENV_VAR in message
    assert str(missing) in message
    assert "make setup" in message


def test_python_without_the_backend_packages_is_reported(tmp_path) -> None:
    # A fresh venv of the base interpreter, without system site-packages, has no torch; the
    # plugin's own swclip_core is on its path, so that is not what it lacks.
    venv.create(tmp_path / "bare", with_pip=False)
    bare_python = tmp_path / "bare" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    with pytest.raises(BackendNotFound, match=r"it lacks the package\(s\) torch, open_clip"):
        probe(str(bare_python))


@pytest.mark.skipif(os.name == "nt", reason="uses a shell script as a stand-in interpreter")
def test_backend_that_hangs_times_out(tmp_path) -> None:
    hanging = tmp_path / "hanging-python"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n", encoding="utf-8")
    hanging.chmod(0o755)
    with pytest.raises(BackendNotFound, match=r"did not answer within 0\.5 s"):
        probe(str(hanging), timeout=0.5)
