"""Several processes (torch.distributed over gloo, 2 CPU processes): the global-batch loss and
its gradients equal one process's; torchrun training, resuming and prediction match one process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import torch
import torch.multiprocessing as mp

from swclip_core import distributed
from swclip_core.data import read_exif_gps
from swclip_core.features import extract_image_features
from swclip_core.geo import pairwise_haversine_m
from swclip_core.losses import LossWeights, clip_infonce, spatial_weights, swclip_loss
from swclip_core.models import create_backbone
from swclip_core.runlock import LOCK_FILE
from swclip_core.runs import CHECKPOINT, CONFIG, METRICS
from swclip_core.semivariogram import Semivariogram, semivariogram_infonce

from .cli_process import partials
from .conftest import PHOTOS, REPO

WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_settings_names_the_process_fields_a_resume_may_change() -> None:
    """What config.json records about the processes is what a resumed run may change."""
    from swclip_core.runs import RESUMABLE_CHANGES

    settings = distributed.run_settings(torch.device("cpu"))
    assert tuple(settings) == distributed.PROCESS_FIELDS
    assert settings["world_size"] == 1 and settings["rank_devices"] == "cpu"
    assert set(distributed.PROCESS_FIELDS) <= RESUMABLE_CHANGES


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


def test_alone_is_one_process_whatever_torchrun_says(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert (distributed.world_size(), distributed.rank(), distributed.restarted()) == (2, 1, True)
    with distributed.alone():
        assert (distributed.world_size(), distributed.rank()) == (1, 0)
        assert distributed.is_main() and not distributed.restarted()
        assert distributed.main_first(lambda: 7) == 7  # no barrier: nobody else is waiting
    assert distributed.rank() == 1


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


def global_batch_worker(rank: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    distributed.start(torch.device("cpu"))
    try:
        for name in ("swclip", "clip", "semivariogram"):
            compare_global_batch(name)
    finally:
        distributed.stop()


def compare_global_batch(name: str) -> None:
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
        torch.testing.assert_close(found[key], grad, rtol=1e-5, atol=1e-7, msg=f"{name} {key}")


def test_global_batch_loss_and_gradients_equal_one_process() -> None:
    """swclip, clip and semivariogram losses over a batch of 7 cut 4 + 3."""
    mp.spawn(global_batch_worker, args=(free_port(),), nprocs=WORLD, join=True)


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


# ---- torchrun: real `swclip` processes -------------------------------------------------------
# Every run here is given one thread per process (torchrun's own default), the single process too:
# float32 sums in another thread count are other roundings, which is no part of the comparison.
RUN_ENV = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
NAMES = sorted(p.name for p in PHOTOS.glob("lund_*.jpg"))[:14]


def samples_csv(folder: Path) -> Path:
    """14 geo-tagged photos: a global batch of 5 is cut 3 + 2, its last batch of 4, 2 + 2."""
    rows = []
    for photo in NAMES:
        lat, lon = read_exif_gps(PHOTOS / photo)
        rows.append({"id": photo, "image": str(PHOTOS / photo), "lat": lat, "lon": lon})
    pd.DataFrame(rows).to_csv(folder / "in.csv", index=False)
    return folder / "in.csv"


def command(*args: object, processes: int = 1, restarts: int = 0) -> list[str]:
    """``swclip ARGS`` alone, or under torchrun with ``processes`` (torchrun's module form)."""
    cli = ["-m", "swclip_core.cli", *map(str, args)]
    if processes == 1:
        return [sys.executable, *cli]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc-per-node={processes}", f"--max-restarts={restarts}", *cli]


def launch(*args: object, processes: int = 1, restarts: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        command(*args, processes=processes, restarts=restarts),
        cwd=REPO,
        env={**os.environ, **RUN_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: object, processes: int = 1, restarts: int = 0) -> subprocess.CompletedProcess:
    process = launch(*args, processes=processes, restarts=restarts)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def train_args(csv: Path, out: Path, cache: Path, *extra: object) -> list[object]:
    return ["train", csv, "--out", out, "--batch-size", 5, "--cache-dir", cache, *extra]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["model"]


def assert_same_weights(expected: dict, got: dict, beyond_share: float = 1 / 5_000) -> None:
    """The weights of two runs that should be one, to 1e-5 but for AdamW's noise-level elements.

    AdamW divides each gradient element by its running RMS (+1e-8): an element whose gradient
    is ~1e-9, float32's rounding noise on gradients of ~1e-2, moves by a sizeable share of the
    learning rate in a direction the rounding decides. Two single-process runs that differ only
    in their thread count differ that way: on these photos 232 of the 4.0M trained weights by
    more than 1e-5 and one by more than 1e-4 (2 processes against 1: 294, 4, the largest 1.1e-3).
    So at most 1 in 5,000 weights (``beyond_share``) may differ by more than 1e-5, 1 in 100,000
    by more than 1e-4 and none by more than 5e-3; a wrong batch, share order or gradient moves
    far more. swgeo trains a new two-layer ReLU head and GeoCLIP's ReLU MLPs at once, where units
    at their threshold switch with the rounding: 2 processes against 1 differed in 1,499 and
    6,090 of its 11.7M weights beyond 1e-5 (21 beyond 1e-4), so it is allowed 1 in 1,000.
    """
    assert expected.keys() == got.keys()
    total, beyond, far = 0, 0, 0
    for name, value in expected.items():
        diff = (value - got[name]).abs()
        total += diff.numel()
        beyond += int((diff > 1e-5).sum())
        far += int((diff > 1e-4).sum())
        assert float(diff.max()) <= 5e-3, (name, float(diff.max()))
    assert beyond <= total * beyond_share, (beyond, total)
    assert far <= total / 100_000, (far, total)


@pytest.fixture(scope="module")
def photos_csv(tmp_path_factory) -> Path:
    return samples_csv(tmp_path_factory.mktemp("torchrun"))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["swclip", "clip", "semivariogram", "swgeo"])
def test_two_processes_train_as_one_with_the_same_global_batch(
    objective, photos_csv, tmp_path, feature_cache
):
    one, two = tmp_path / "one", tmp_path / "two"
    options = ("--objective", objective, "--epochs", 2)
    run(*train_args(photos_csv, one, feature_cache, *options))
    run(*train_args(photos_csv, two, feature_cache, *options), processes=2)
    alone, pair = metrics(one), metrics(two)
    assert [r["epoch"] for r in pair] == [1, 2]
    for a, b in zip(alone, pair, strict=True):
        for key in a.keys() - {"seconds", "samples_per_s", *distributed.PROCESS_FIELDS}:
            # float32 rounding, which AdamW amplifies in a few weights (assert_same_weights),
            # moves a loss of ~3 by up to ~1.5e-5 after two epochs (swgeo)
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (key, a[key], b[key])
        assert (b["world_size"], b["backend"], b["rank_devices"]) == (2, "gloo", "cpu,cpu")
        assert (a["world_size"], a["backend"]) == (1, None)
    assert_same_weights(
        weights(one), weights(two), 1 / 1_000 if objective == "swgeo" else 1 / 5_000
    )
    config = json.loads((two / CONFIG).read_text())
    assert (config["world_size"], config["backend"], config["rank_devices"]) == (
        2,
        "gloo",
        "cpu,cpu",
    )
    assert config["batch_size"] == 5  # the global batch
    if objective == "semivariogram":
        assert (two / "semivariogram.json").is_file()
    assert not (two / LOCK_FILE).exists() and not partials(two)


@pytest.mark.slow
def test_two_processes_extract_their_shares_of_the_features(photos_csv, tmp_path):
    """image-knn is feature extraction alone: each process extracts its share into the cache,
    rank 0 saves them all, as one process computes them."""
    run(
        *train_args(photos_csv, tmp_path / "knn", tmp_path / "cache", "--objective", "image-knn"),
        processes=2,
    )
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == len(NAMES)
    got = torch.load(tmp_path / "knn" / "knn_features.pt", weights_only=True)["features"]
    backbone = create_backbone("swclip-lite", device=torch.device("cpu"))
    paths = [str(PHOTOS / name) for name in NAMES]
    alone = extract_image_features(backbone, paths, device=torch.device("cpu"), use_cache=False)
    torch.testing.assert_close(got, torch.nn.functional.normalize(alone, dim=-1), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_what_runs_in_one_process_refuses_torchrun_in_one_line(photos_csv):
    process = launch("probe", photos_csv, processes=2)
    _, err = process.communicate(timeout=600)
    assert process.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("swclip: error:")]
    assert errors and "one process" in errors[0] and "without torchrun" in errors[0]
    assert "swclip_core/" not in err  # no traceback of ours (torchrun reports the exit itself)


@pytest.mark.slow
def test_two_processes_train_the_hybrid_encoder(photos_csv, tmp_path, feature_cache):
    """hybrid gathers the captions' embeddings too; its text tower's dropout draws per process
    (no digit-for-digit comparison with one process here, as in finetune mode)."""
    out = tmp_path / "hybrid"
    run(*train_args(photos_csv, out, feature_cache, "--objective", "hybrid", "--epochs", 1),
        processes=2)  # fmt: skip
    (record,) = metrics(out)
    assert record["world_size"] == 2 and np.isfinite(record["loss"])
    # every photo's place went through the queue once, pushed alike in both processes
    assert record["queue_filled"] == len(pd.read_csv(photos_csv))
    assert any(name.startswith("text_proj") for name in weights(out)), sorted(weights(out))[:5]


def workers(launcher: subprocess.Popen) -> dict[int, int]:
    """The pids of torchrun's worker processes by their RANK (read from /proc)."""
    found = {}
    for task in Path(f"/proc/{launcher.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(pid)
    return found


def kill_worker_after_epoch(launcher: subprocess.Popen, run_dir: Path, epoch: int, rank: int):
    deadline = time.monotonic() + 300
    while not (run_dir / METRICS).is_file() or len(metrics(run_dir)) < epoch:
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(workers(launcher)[rank], signal.SIGKILL)


@pytest.fixture(scope="module")
def uninterrupted(photos_csv, tmp_path_factory, feature_cache) -> Path:
    """A 2-process run of 8 epochs that nothing stopped."""
    whole = tmp_path_factory.mktemp("whole") / "run"
    run(*train_args(photos_csv, whole, feature_cache, "--epochs", 8), processes=2)
    return whole


@pytest.mark.slow
@pytest.mark.parametrize("how", ["elastic restart", "--resume"])
def test_a_killed_worker_continues_from_the_last_checkpoint(
    how, photos_csv, tmp_path, feature_cache, uninterrupted
):
    killed = tmp_path / "killed"
    args = train_args(photos_csv, killed, feature_cache, "--epochs", 8)
    if how == "elastic restart":  # torchrun restarts the group, which resumes by itself
        launcher = launch(*args, processes=2, restarts=1)
        kill_worker_after_epoch(launcher, killed, 2, rank=1)
        _, err = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, err[-3000:]
    else:  # the rank that holds the lock and writes; the user resumes it in one process
        launcher = launch(*args, processes=2)
        kill_worker_after_epoch(launcher, killed, 2, rank=0)
        launcher.communicate(timeout=600)
        assert launcher.returncode != 0
        assert torch.load(killed / CHECKPOINT, weights_only=True)["epoch"] < 8
        run(*args, "--resume")  # another world size, the same global batch
        assert json.loads((killed / CONFIG).read_text())["world_size"] == 1
    records = metrics(killed)
    assert [r["epoch"] for r in records] == list(range(1, 9))
    if how == "elastic restart":  # the same processes: the same digits
        for name, value in weights(uninterrupted).items():
            assert torch.equal(value, weights(killed)[name]), name
    else:
        assert_same_weights(weights(uninterrupted), weights(killed))
        for a, b in zip(metrics(uninterrupted), records, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    assert not (killed / LOCK_FILE).exists() and not partials(killed)


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Text and integers exactly; degrees to 1e-8 (1 mm), metres to 1 mm, scores to 1e-6 (the
    features of a photo embedded among other photos differ in float32's last digits)."""
    for column in expected.columns:
        if column == "candidates":  # JSON [lat, lon, score] with scores rounded to 4 digits
            for a, b in zip(got[column], expected[column], strict=True):
                np.testing.assert_allclose(json.loads(a), json.loads(b), rtol=0, atol=1.5e-4)
        elif pd.api.types.is_float_dtype(expected[column]):
            tolerance = (
                1e-3
                if column.endswith("_m")
                else 1e-8
                if "lat" in column or "lon" in column
                else 1e-6
            )
            np.testing.assert_allclose(
                got[column], expected[column], rtol=0, atol=tolerance, err_msg=column
            )
        else:
            assert got[column].tolist() == expected[column].tolist(), column


@pytest.mark.slow
def test_two_processes_predict_and_evaluate_as_one(photos_csv, tmp_path, uninterrupted):
    """Each process localizes its share of every chunk (14 rows in chunks of 4: shares of 2 and
    2, then 1 and 1); rank 0 writes one GeoPackage with the rows of a 1-process predict. Evaluate's
    figures (SSI and City-Align need every embedding at once) are the 1-process figures."""
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}.gpkg"
        cache = tmp_path / f"cache{processes}"
        run("predict", photos_csv, "--model", uninterrupted, "--out", out,
            "--chunk-rows", 4, "--cache-dir", cache, processes=processes)  # fmt: skip
        figures = tmp_path / f"e{processes}.json"
        run("evaluate", photos_csv, "--model", uninterrupted, "--json", figures,
            "--cache-dir", cache, processes=processes)  # fmt: skip
        outputs[processes] = (out, json.loads(figures.read_text())["summary"])
    (one, one_figures), (two, two_figures) = outputs[1], outputs[2]
    assert [str(n) for n, _ in pyogrio.list_layers(two)] == [
        str(n) for n, _ in pyogrio.list_layers(one)
    ]
    for layer in ("predicted_points", "error_lines"):
        expected = pyogrio.read_dataframe(one, layer=layer)
        got = pyogrio.read_dataframe(two, layer=layer)
        assert list(got.columns) == list(expected.columns) and len(got) == len(NAMES)
        assert_same_rows(got.drop(columns="geometry"), expected.drop(columns="geometry"))
        assert got.geometry.geom_equals_exact(expected.geometry, tolerance=1e-8).all()
    assert two_figures.keys() == one_figures.keys()
    for key, value in one_figures.items():
        assert two_figures[key] == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), key
    assert not partials(tmp_path)


@pytest.mark.slow
def test_two_processes_finetune_the_image_trunk(photos_csv, tmp_path, feature_cache):
    """--mode finetune: each process decodes and encodes its share of the photos; the trunk's
    weights train and rank 0 saves them (batch-norm statistics are per share: no digit-for-digit
    comparison with one process here)."""
    out = tmp_path / "finetune"
    run(*train_args(photos_csv, out, feature_cache, "--mode", "finetune", "--epochs", 1),
        processes=2)  # fmt: skip
    (record,) = metrics(out)
    assert record["world_size"] == 2 and np.isfinite(record["loss"])
    trained = weights(out)
    assert any(name.startswith("model.visual.trunk") for name in trained), sorted(trained)[:5]
