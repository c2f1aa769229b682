"""Several processes (torch.distributed over gloo, 2 CPU processes): the global-batch loss and
its gradients equal one process's; torchrun training, resuming and prediction match one process.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from swclip_core import distributed
from swclip_core.geo import pairwise_haversine_m
from swclip_core.losses import LossWeights, clip_infonce, spatial_weights, swclip_loss
from swclip_core.semivariogram import Semivariogram, semivariogram_infonce

WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_shares_cover_the_rows_in_order() -> None:
    for count in (0, 1, 2, 7, 8):
        for parts in (1, 2, 3):
            cuts = distributed.shares(count, parts)
            rows = np.arange(count)
            assert np.concatenate([rows[cut] for cut in cuts]).tolist() == rows.tolist()
            sizes = [cut.stop - cut.start for cut in cuts]
            assert max(sizes) - min(sizes) <= 1


def test_one_process_runs_without_a_process_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    local = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_rows(local, 3) is local
    rows = np.arange(5)
    assert distributed.local_share(rows) is rows
    assert distributed.is_main() and not distributed.active()
    assert distributed.start(torch.device("cpu")) == torch.device("cpu")
    assert not torch.distributed.is_initialized()


class Towers(torch.nn.Module):
    """Two linear towers and a temperature: the shape of a caption model's trainable part."""

    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Linear(5, 8)
        self.text = torch.nn.Linear(6, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.unused = torch.nn.Parameter(torch.ones(3))  # no gradient anywhere: must keep none


def batch(seed: int = 3, n: int = 7):
    """A global batch: features, tokens, coordinates a few hundred metres apart, regions."""
    g = torch.Generator().manual_seed(seed)
    features, tokens = torch.randn(n, 5, generator=g), torch.randn(n, 6, generator=g)
    lat = 54.1 + torch.rand(n, generator=g, dtype=torch.float64) * 0.01
    lon = -4.6 + torch.rand(n, generator=g, dtype=torch.float64) * 0.01
    region = torch.tensor([0, 0, 1, 1, 2, -1, 2])[:n]
    return features, tokens, lat, lon, region


def loss_of(name: str, model: Towers, img, txt, lat, lon, region) -> torch.Tensor:
    scale = model.logit_scale.exp()
    img_n = torch.nn.functional.normalize(img, dim=-1)
    txt_n = torch.nn.functional.normalize(txt, dim=-1)
    logits = scale * img_n @ txt_n.T
    if name == "clip":
        return clip_infonce(logits)
    if name == "semivariogram":
        vg = Semivariogram(nugget=0.1, sill=0.9, range_m=600.0, model="spherical")
        dist = pairwise_haversine_m(lat, lon)
        return semivariogram_infonce(logits, dist, vg, cosine=img_n @ txt_n.T)
    w = spatial_weights(lat, lon, scale_m=300.0, cutoff_m=None).float()
    return swclip_loss(logits, img, txt, w, region, LossWeights())[0]


def global_batch_worker(rank: int, port: int, name: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    distributed.start(torch.device("cpu"))
    try:
        features, tokens, lat, lon, region = batch()
        torch.manual_seed(0)
        model = Towers()
        # one process: the whole batch
        img, txt = model.image(features), model.text(tokens)
        reference = loss_of(name, model, img, txt, lat, lon, region)
        reference.backward()
        expected = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        # two processes: each embeds its share, the loss sees the gathered global batch
        mine = distributed.local_share(np.arange(len(features)))
        img = distributed.gather_rows(model.image(features[mine]), len(features))
        txt = distributed.gather_rows(model.text(tokens[mine]), len(features))
        loss = loss_of(name, model, img, txt, lat, lon, region)
        torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
        loss.backward()
        distributed.average_gradients(list(model.parameters()))
        found = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        assert set(found) == set(expected) and "unused" not in found
        for key, grad in expected.items():
            torch.testing.assert_close(found[key], grad, rtol=1e-5, atol=1e-7, msg=key)
    finally:
        distributed.stop()


@pytest.mark.parametrize("name", ["swclip", "clip", "semivariogram"])
def test_global_batch_loss_and_gradients_equal_one_process(name: str) -> None:
    mp.spawn(global_batch_worker, args=(free_port(), name), nprocs=WORLD, join=True)


def empty_share_worker(rank: int, port: int) -> None:
    """A global batch smaller than the world: a process with no rows still takes part."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="3", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    distributed.start(torch.device("cpu"))
    try:
        features, tokens, lat, lon, _ = batch(n=2)
        torch.manual_seed(0)
        model = Towers()
        reference = loss_of("clip", model, model.image(features), model.text(tokens), lat, lon, 0)
        reference.backward()
        expected = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        mine = distributed.local_share(np.arange(2))
        img = distributed.gather_rows(model.image(features[mine]), 2)
        txt = distributed.gather_rows(model.text(tokens[mine]), 2)
        loss_of("clip", model, img, txt, lat, lon, 0).backward()
        distributed.average_gradients(list(model.parameters()))
        for key, grad in expected.items():
            torch.testing.assert_close(dict(model.named_parameters())[key].grad, grad, msg=key)
    finally:
        distributed.stop()


def test_a_process_without_rows_keeps_the_gradients_right() -> None:
    mp.spawn(empty_share_worker, args=(free_port(),), nprocs=3, join=True)
