"""Frozen-feature extraction: the DataLoader pipeline gives the model's own forward, and the cache
gives back what was stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swclip_core.data.images import load_image
from swclip_core.device import resolve_device
from swclip_core.features import extract_image_features, prefetched
from swclip_core.models import create_backbone

from .conftest import PHOTOS as PHOTOS_DIR


@torch.no_grad()
def test_pipeline_features_equal_a_plain_forward_and_come_back_from_the_cache(tmp_path):
    device = resolve_device("cpu")
    backbone = create_backbone("swclip-lite", device=device).eval()
    paths = [str(p) for p in sorted(PHOTOS_DIR.glob("*.jpg"))[::8]]  # Lund frames and panoramas
    # The plain way: decode (at the model's input size), the unsplit preprocessing, one forward.
    pixels = torch.stack([backbone.preprocess(load_image(p, min_side=256)) for p in paths])
    expected = backbone.image_features(pixels)

    got = extract_image_features(
        backbone, paths, device=device, cache_dir=tmp_path, batch_size=2, num_workers=2
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    cached = extract_image_features(backbone, paths, device=device, cache_dir=tmp_path)
    assert torch.equal(cached, got)
    assert len(list(tmp_path.rglob("*.npy"))) == len(paths)
    # decoded in the main process, one batch ahead of the forward pass (the CPU default)
    in_process = extract_image_features(
        backbone, paths, device=device, use_cache=False, batch_size=2, num_workers=0
    )
    torch.testing.assert_close(in_process, got, atol=1e-6, rtol=0)


@torch.no_grad()
def test_a_damaged_cache_entry_is_computed_again(tmp_path):
    device = resolve_device("cpu")
    backbone = create_backbone("swclip-lite", device=device).eval()
    paths = [str(p) for p in sorted(PHOTOS_DIR.glob("*.jpg"))[:2]]
    good = extract_image_features(backbone, paths, device=device, cache_dir=tmp_path)
    entries = sorted(tmp_path.rglob("*.npy"))
    entries[0].write_bytes(entries[0].read_bytes()[:60])  # cut short inside the header
    entries[1].write_bytes(b"\x93NUMPY" + bytes(range(200)))  # a header that is no header
    again = extract_image_features(backbone, paths, device=device, cache_dir=tmp_path)
    torch.testing.assert_close(again, good, atol=1e-6, rtol=0)
    for entry in entries:  # rewritten whole
        assert np.load(entry).shape == good.shape[1:]


def test_prefetched_batches_come_in_order_and_errors_reach_the_caller():
    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]
    assert list(prefetched([])) == []

    def broken():
        yield 1
        raise ValueError("cannot decode photo 2")

    batches = prefetched(broken())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="photo 2"):
        next(batches)
    decoded = []

    def counted():
        for i in range(100):
            decoded.append(i)
            yield i

    stopped = prefetched(counted())
    assert next(stopped) == 0
    stopped.close()  # a cancelled extraction: at most the batch ahead was decoded
    assert decoded == [0, 1]
