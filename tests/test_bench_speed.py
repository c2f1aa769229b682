"""The Speed section's arithmetic: the ViT cost model that bounds the GeoCLIP row."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.speed import vit_flops


def test_vit_l14_costs_what_its_published_count_says():
    """CLIP ViT-L/14 at 224 px: 24 layers of width 1024 (MLP 4096) over 257 tokens. Published
    counts are about 81 G multiply-adds an image (e.g. 77.8 GMACs without the attention's
    token-by-token products in timm's table for vit_large_patch14_clip_224), so 155-170 GFLOP."""
    vit_l14 = SimpleNamespace(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, image_size=224,
        patch_size=14,
    )  # fmt: skip
    assert vit_flops(vit_l14) / 1e9 == pytest.approx(162.0, abs=0.1)
    # linear in depth, so one layer more costs one layer's share
    deeper = SimpleNamespace(**{**vars(vit_l14), "num_hidden_layers": 25})
    per_layer = vit_flops(deeper) - vit_flops(vit_l14)
    assert per_layer / 1e9 == pytest.approx(2 * 3.37, abs=0.02)
