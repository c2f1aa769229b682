"""``--precision``: which precision runs where, that it is recorded, and that bfloat16 leaves the
embeddings and what they retrieve as they are in float32."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from swclip_core import device as device_module
from swclip_core.cli import main
from swclip_core.device import (
    autocast,
    cpu_has_native_bf16,
    current_precision,
    gallery_precision,
    precision_scope,
    resolve_precision,
)
from swclip_core.errors import InputError

from .conftest import PHOTOS, REPO

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "flags, expected", [("fpu avx512f avx512_bf16", True), ("fpu avx2", False)]
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is expected
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_on_cpus_that_have_it(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision(None, CPU) == "fp32"  # the default keeps the CPU in float32
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: emulated where not native


def test_fp16_on_a_cpu_and_unknown_precisions_are_refused(capsys):
    with pytest.raises(InputError, match="float16 needs a GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("fp8", CPU)
    code = main(["predict", str(PHOTOS), "--model", "x", "--out", "x.gpkg", "--precision", "fp16"])
    assert code == 2 and "float16 needs a GPU" in capsys.readouterr().err


def test_the_scope_sets_what_autocast_does_and_ends_with_it():
    linear = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with precision_scope("bf16"):
        assert current_precision(CPU) == "bf16"
        with autocast(CPU):
            assert linear(x).dtype == torch.bfloat16
    assert current_precision(CPU) == "fp32"
    with autocast(CPU):
        assert linear(x).dtype == torch.float32


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, feature_cache):
    """`swclip train --precision bf16` on the bundled photos and 30 generated scenes (the photos'
    features come from the session's cache: swclip-lite's trunk computes in float32 anyway)."""
    from swclip_core.data import read_samples
    from swclip_core.data.places import load_places, select_places
    from swclip_core.data.synthetic import generate_scenes
    from swclip_core.io import write_csv

    folder = tmp_path_factory.mktemp("precision")
    places = load_places(REPO / "resources" / "sample_data" / "places" / "isleofman_addresses.csv")
    scenes = generate_scenes(select_places(places, n=30, seed=0), folder / "scenes", seed=0)
    photos = read_samples(PHOTOS).drop(columns="geometry")
    samples = write_csv(pd.concat([photos, scenes], ignore_index=True), folder / "samples.csv")
    run, cache = folder / "run", feature_cache
    train = ["train", str(samples), "--out", str(run), "--epochs", "3", "--batch-size", "32"]
    assert main([*train, "--cache-dir", str(cache), "--precision", "bf16"]) == 0
    return samples, run, cache


@pytest.mark.slow
def test_the_precision_is_recorded_in_config_and_evaluation(bf16_run):
    samples, run, cache = bf16_run
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    report = run.parent / "evaluation.json"
    evaluate = ["evaluate", str(samples), "--model", str(run), "--json", str(report)]
    assert main([*evaluate, "--cache-dir", str(cache), "--precision", "bf16"]) == 0
    assert json.loads(report.read_text())["context"]["precision"] == "bf16"


@pytest.mark.slow
@pytest.mark.skipif(
    not cpu_has_native_bf16(),
    reason="this CPU has no native bfloat16 (no amx_bf16/avx512_bf16 flag): `auto` keeps "
    "float32 here and --precision bf16 would only be emulated",
)
def test_auto_embeddings_and_predictions_match_fp32(bf16_run):
    """The accuracy guard of `auto` on this CPU: the trained model embeds the photos and scenes
    in float32 and under `auto` (bfloat16), and builds their locations' caption gallery the way
    predict does (in float32 under `auto`: device.gallery_precision). Every bfloat16 image
    embedding has cosine >= 0.999 to its float32 one; no prediction moves by more than 5 m; the
    top-5 captions are the same set for >= 99 % of the images (with 71 images: all of them).
    Explicit bf16 embeds the gallery in bfloat16 too: its captions keep cosine >= 0.999."""
    from swclip_core.api import load_trained
    from swclip_core.data import read_samples
    from swclip_core.evaluation import caption_table, embed_images
    from swclip_core.geo import haversine_m
    from swclip_core.retrieval import build_gallery, embed_captions, localize
    from swclip_core.runs import caption_template

    samples_csv, run, cache = bf16_run
    model, config = load_trained(run, CPU)
    samples = read_samples(samples_csv)
    gallery = caption_table(samples, caption_template(config))
    found = {}
    for precision in ("fp32", "auto"):
        with precision_scope(precision):
            images = embed_images(
                model, samples["image_path"].tolist(), device=CPU, trunk_finetuned=False,
                cache_dir=cache,
            )  # fmt: skip
            texts = build_gallery(model, gallery, device=CPU, model_fingerprint="").embeddings
        found[precision] = images, texts, localize(images, texts, gallery, k=5, temperature=0.07)
    (images32, texts32, pred32), (images16, texts_auto, pred16) = found["fp32"], found["auto"]
    assert F.cosine_similarity(images16, images32).min() >= 0.999
    torch.testing.assert_close(texts_auto, texts32, rtol=0, atol=0)  # float32 under auto
    moved = haversine_m(pred16.lat, pred16.lon, pred32.lat, pred32.lon)
    same_top5 = (np.sort(pred16.top_index, 1) == np.sort(pred32.top_index, 1)).all(axis=1)
    assert len(moved) == 71 and moved.max() <= 5.0
    assert same_top5.mean() >= 0.99
    with precision_scope("bf16"):
        texts16 = embed_captions(model, gallery["caption"].tolist(), device=CPU)
    assert F.cosine_similarity(texts16, texts32).min() >= 0.999


@pytest.mark.parametrize(
    "spec, device, expected",
    [("auto", "cpu", "fp32"), ("auto", "cuda", "fp32"), (None, "cuda", "fp32"),
     (None, "cpu", "fp32"), ("bf16", "cpu", "bf16"), ("fp16", "cuda", "fp16")],
)  # fmt: skip
def test_galleries_are_embedded_in_float32_unless_asked_otherwise(spec, device, expected):
    with precision_scope(spec):
        assert gallery_precision(torch.device(device)) == expected
