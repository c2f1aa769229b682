"""The shape of the code: which modules may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# Readers, geodesy and GIS outputs serve the QGIS backend checks and notebooks that never train:
# importing them must not pay torch's seconds of start-up.
LIGHT_MODULES = (
    "swclip_core",
    "swclip_core.geo",
    "swclip_core.io",
    "swclip_core.columns",
    "swclip_core.runs",
    "swclip_core.distributed",
    "swclip_core.captions",
    "swclip_core.config",
    "swclip_core.data",
    "swclip_core.data.joins",
    "swclip_core.data.photo_folders",
    "swclip_core.data.rasters",
    "swclip_core.data.records",
    "swclip_core.data.samples",
    "swclip_core.data.scene_styles",
    "swclip_core.data.scenes",
    "swclip_core.data.splits",
    "swclip_core.data.synthetic",
    "swclip_core.data.tables",
    "swclip_core.error_map",
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


# --- the import graph -----------------------------------------------------------------------
# Layers of swclip_core, from the bottom (docs/architecture.md). A module may import its own layer
# and the layers below, never one above.
LAYERS = {
    "foundation": ("errors", "io", "columns", "config", "device", "runlock", "distributed"),
    "maths": (
        "geo",
        "captions",
        "batches",
        "losses",
        "metrics",
        "semivariogram",
        "retrieval",
        "gallery_index",
        "fusion",
        "surface",
    ),
    "data": ("data", "galleries", "outputs", "error_map"),
    "models": ("models", "features"),
    "engine": ("runs", "loop", "objectives", "evaluation", "probe"),
    "api": ("api", "knn_weight"),
    "interface": ("cli", "cli_input", "cli_options", "worker", "demo"),
}
ORDER = list(LAYERS)
# The list of objectives (and its package, only a docstring) is read by the configuration; the
# objectives themselves are the engine.
FOUNDATION_OBJECTIVES = ("objectives", "objectives.registry")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[tuple[str, str | None]]:
    """``(module, name)`` of every import statement in ``tree`` (``import m``: ``(m, None)``),
    function bodies included (a lazy import is still a dependency), ``if TYPE_CHECKING:`` blocks
    excluded (they never run)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[tuple[str, str | None]] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            stack.append(child)
            if isinstance(child, ast.Import):
                found.update((alias.name, None) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.update((base, alias.name) for alias in child.names)
    return found


def core_graph() -> dict[str, set[str]]:
    """swclip_core's modules and the swclip_core modules each one imports."""
    files = {module_name(p): p for p in (REPO / "swclip_core").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for base, member in imported_names(tree, name, path.name == "__init__.py"):
            # ``from a import b`` imports module a.b when there is one, else a name of a
            target = f"{base}.{member}" if f"{base}.{member}" in files else base
            if target in files and target != name:
                edges.add(target)
        # From outside a package, importing a.b.c runs the __init__ of a.b first (the root
        # package's aside: it is the library's front door and imports the api on purpose).
        for target in list(edges):
            parent = target.rpartition(".")[0]
            while parent not in ("", "swclip_core", name) and not name.startswith(parent + "."):
                edges.add(parent)
                parent = parent.rpartition(".")[0]
        graph[name] = edges
    return graph


def layer_of(module: str) -> str:
    if module == "swclip_core":
        return "api"  # the package re-exports the api
    short = module.removeprefix("swclip_core.")
    if short in FOUNDATION_OBJECTIVES:
        return "foundation"
    for layer, members in LAYERS.items():
        if any(short == m or short.startswith(m + ".") for m in members):
            return layer
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def test_every_module_has_a_layer() -> None:
    for module in core_graph():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = []
    for module, targets in core_graph().items():
        for target in targets:
            if ORDER.index(layer_of(target)) > ORDER.index(layer_of(module)):
                wrong.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_maths_never_imports_the_engine_or_the_command_line() -> None:
    above = {"engine", "api", "interface"}
    for module, targets in core_graph().items():
        if layer_of(module) == "maths":
            assert not {t for t in targets if layer_of(t) in above}, module


def test_no_import_cycle() -> None:
    graph = core_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_plugin_never_imports_torch_or_swclip_core() -> None:
    # QGIS's Python has no torch; the plugin drives swclip_core's worker in another process.
    forbidden = ("torch", "torchvision", "open_clip", "swclip_core")
    for path in (REPO / "swclip_qgis").rglob("*.py"):
        if "bundled" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = imported_names(tree, module_name(path), path.name == "__init__.py")
        bad = {base for base, _ in names if base.split(".")[0] in forbidden}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_importing_the_package_needs_no_third_party_module_and_exports_the_api() -> None:
    # The plugin checks a backend with `import swclip_core` before its requirements are in.
    code = (
        "import sys\n"
        "import swclip_core as sw\n"
        "heavy = sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules)\n"
        "import swclip_core.api, swclip_core.evaluation, swclip_core.config\n"
        "same = [sw.evaluate is swclip_core.api.evaluate, sw.train is swclip_core.api.train,\n"
        "        sw.TrainConfig is swclip_core.config.TrainConfig]\n"
        "print(','.join(heavy), all(same))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True"]
