"""Run folders that cannot be corrupted and model errors that explain themselves.

Concurrency, resume mismatches and kills are real `swclip` processes; model-folder damage runs
the command in-process too (any escaping exception would fail the test, as a traceback would)."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from swclip_core.api import load_trained
from swclip_core.cli import main
from swclip_core.data import read_exif_gps
from swclip_core.errors import ModelError
from swclip_core.runlock import LOCK_FILE
from swclip_core.runs import CHECKPOINT, CONFIG, METRICS, TRAIN_SAMPLES, load_checkpoint

from .cli_process import finish, partials, start, swclip, tree
from .conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow
NAMES = sorted(p.name for p in PHOTOS.glob("lund_*.jpg"))[:12]


def samples_csv(folder, names=NAMES, name="in.csv"):
    rows = []
    for photo in names:
        lat, lon = read_exif_gps(PHOTOS / photo)
        rows.append({"id": photo, "image": str(PHOTOS / photo), "lat": lat, "lon": lon})
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder / name


def train_args(csv, run, cache, *extra):
    return ["train", csv, "--out", run, "--batch-size", 4, "--cache-dir", cache, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, feature_cache):
    """A finished two-epoch run on 12 photos, and its input."""
    folder = tmp_path_factory.mktemp("trained")
    csv = samples_csv(folder)
    run = folder / "run"
    assert main([*map(str, train_args(csv, run, feature_cache, "--epochs", 2))]) == 0
    return csv, run


def copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ---- one process per run folder ----


def wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, finish(process)
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_train_on_the_same_folder_is_refused_naming_the_holder(tmp_path, feature_cache):
    csv = samples_csv(tmp_path)
    other = samples_csv(tmp_path, NAMES[:6], "other.csv")
    run = tmp_path / "run"
    first = start(*train_args(csv, run, feature_cache, "--epochs", 3))
    wait_for(run / LOCK_FILE, first)
    second = swclip(*train_args(other, run, feature_cache, "--epochs", 1))
    second.assert_error(2, str(run), f"pid {first.pid}")
    assert finish(first).code == 0
    # the folder describes the first run alone
    assert len(pd.read_csv(run / TRAIN_SAMPLES)) == len(NAMES)
    assert json.loads((run / CONFIG).read_text())["epochs"] == 3
    assert [json.loads(x)["epoch"] for x in (run / METRICS).read_text().splitlines()] == [1, 2, 3]
    assert not (run / LOCK_FILE).exists() and not partials(run)


# ---- resume ----


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--seed", "7"], "seed 7"),
        (["--lr", "0.01"], "lr 0.01"),
        (["--objective", "clip"], "objective 'clip'"),
        ("other input", "input samples"),
    ],
)
def test_resume_refuses_other_input_or_settings(trained, tmp_path, feature_cache, change, named):
    csv, run = trained
    run = copy_run(run, tmp_path)
    before = tree(run)
    if change == "other input":
        csv, change = samples_csv(tmp_path, NAMES[:6], "other.csv"), []
    result = swclip(*train_args(csv, run, feature_cache, "--epochs", 2, "--resume", *change))
    result.assert_error(2, "cannot resume", named)
    assert tree(run) == before


def test_resume_of_a_finished_run_is_already_complete(trained, tmp_path, feature_cache):
    csv, run = trained
    run = copy_run(run, tmp_path)
    before = tree(run)
    result = swclip(*train_args(csv, run, feature_cache, "--epochs", 2, "--resume"))
    assert result.code == 0, result.err
    assert "already complete (2 epochs, final loss" in result.out and "nan" not in result.out
    assert tree(run) == before


def test_resume_of_a_missing_folder_is_an_error(tmp_path, feature_cache):
    csv = samples_csv(tmp_path)
    result = swclip(*train_args(csv, tmp_path / "nowhere", feature_cache, "--resume"))
    result.assert_error(2, "--resume", "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_kill_9_mid_training_then_resume_is_bit_identical(tmp_path, feature_cache):
    csv = samples_csv(tmp_path)
    whole = tmp_path / "whole"
    assert swclip(*train_args(csv, whole, feature_cache, "--epochs", 4)).code == 0
    run = tmp_path / "killed"
    process = start(*train_args(csv, run, feature_cache, "--epochs", 4))
    deadline = time.monotonic() + 300
    while not (run / CHECKPOINT).exists() or torch.load(run / CHECKPOINT)["epoch"] < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()  # reaps it and closes its pipes
    resumed = swclip(*train_args(csv, run, feature_cache, "--epochs", 4, "--resume"))
    assert resumed.code == 0, resumed.err
    expected, got = torch.load(whole / CHECKPOINT), torch.load(run / CHECKPOINT)
    assert got["epoch"] == 4
    for name, weights in expected["model"].items():
        assert torch.equal(weights, got["model"][name]), name
    epochs = [json.loads(x)["epoch"] for x in (run / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # no epoch repeated, none missing
    assert not partials(run) and not (run / LOCK_FILE).exists()


def test_metrics_follow_the_checkpoint_after_a_kill_between_them(trained, tmp_path, feature_cache):
    # The state a kill right after the checkpoint leaves: epoch 2 saved, its line not yet written.
    csv, run = trained
    run = copy_run(run, tmp_path)
    lines = (run / METRICS).read_text().splitlines()
    (run / METRICS).write_text(lines[0] + "\n")
    result = swclip(*train_args(csv, run, feature_cache, "--epochs", 3, "--resume"))
    assert result.code == 0, result.err
    epochs = [json.loads(x)["epoch"] for x in (run / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3]


# ---- model folders that cannot be used: exit 3, one line naming the file ----


def damage_checkpoint(run, how):
    path = run / CHECKPOINT
    good = path.read_bytes()
    state = torch.load(path)
    if how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "a list":
        torch.save([1, 2, 3], path)
    elif how == "no model":
        torch.save({k: v for k, v in state.items() if k != "model"}, path)
    elif how == "model not weights":
        torch.save({**state, "model": {"head": "text"}}, path)
    elif how == "other shapes":
        torch.save({**state, "model": {k: torch.zeros(3) for k in state["model"]}}, path)
    elif how == "malicious pickle":
        torch.save({**state, "model": Exploit()}, path)
    elif how == "missing":
        path.unlink()
    return path


class Exploit:
    """Unpickling this would run a shell command: a checkpoint must never be unpickled."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/swclip-pwned",))


def damage_config(run, how):
    path = run / CONFIG
    config = json.loads(path.read_text())
    damaged = {
        "invalid JSON": '{"objective": "swclip",',
        "not an object": "[1, 2]",
        "mistyped": json.dumps({**config, "epochs": "three"}),
        "unknown key": json.dumps({**config, "colour": "red"}),
        "unknown objective": json.dumps({**config, "objective": "magic"}),
        "bad kernel": json.dumps({**config, "kernel": {**config["kernel"], "scale_m": "far"}}),
    }[how]
    path.write_text(damaged)
    return path


CHECKPOINT_DAMAGE = [
    "truncated", "random", "empty", "a list", "no model", "model not weights", "other shapes",
    "malicious pickle", "missing",
]  # fmt: skip
CONFIG_DAMAGE = [
    "invalid JSON", "not an object", "mistyped", "unknown key", "unknown objective", "bad kernel",
]  # fmt: skip


@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE + CONFIG_DAMAGE)
def test_an_unusable_model_folder_exits_3_with_one_line(
    trained, tmp_path, capsys, feature_cache, how
):
    csv, run = trained
    run = copy_run(run, tmp_path)
    damage = damage_checkpoint if how in CHECKPOINT_DAMAGE else damage_config
    path = damage(run, how)
    before = tree(run)
    out = tmp_path / "pred.gpkg"
    args = ["predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache]
    assert main(list(map(str, args))) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swclip: error:") and str(path) in err[0], err
    assert not out.exists() and not partials(tmp_path)
    assert tree(run) == before
    assert not os.path.exists("/tmp/swclip-pwned")
    with pytest.raises(ModelError, match=str(path)):  # the library says the same
        load_trained(run, "cpu")


def test_any_bytes_under_the_checkpoint_name_give_a_model_error(tmp_path):
    # Random bytes, some behind a pickle protocol header so that they reach deep into torch's
    # unpickler, which then fails with whatever it hits (IndexError, KeyError, ...).
    path = tmp_path / CHECKPOINT
    for seed in range(500):
        rng = random.Random(seed)
        header = b"\x80\x02" if seed % 2 else b""
        path.write_bytes(header + rng.randbytes(rng.choice([16, 256, 4096])))
        with pytest.raises(ModelError, match=str(path)):
            load_checkpoint(path)


@pytest.mark.parametrize("how", ["malicious pickle", "truncated", "mistyped"])
def test_model_errors_reach_every_path_as_one_line(trained, tmp_path, feature_cache, how):
    csv, run = trained
    run = copy_run(run, tmp_path)
    path = (damage_checkpoint if how in CHECKPOINT_DAMAGE else damage_config)(run, how)
    out = tmp_path / "pred.gpkg"
    predict = swclip("predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache)
    predict.assert_error(3, str(path))
    resume = swclip(*train_args(csv, run, feature_cache, "--epochs", 3, "--resume"))
    resume.assert_error(3, str(path))
    worker = worker_run("predict", [str(csv), "--model", str(run), "--out", str(out)])
    assert worker["type"] == "error" and worker["exit_code"] == 3 and str(path) in worker["message"]
    assert not os.path.exists("/tmp/swclip-pwned")


def worker_run(command, args):
    """The plugin's path: `python -m swclip_core.worker`; its last JSON line."""
    result = subprocess.run(
        [sys.executable, "-m", "swclip_core.worker"],
        input=json.dumps({"command": command, "args": args}),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_pickle_is_never_run_even_as_a_whole_file(trained, tmp_path, capsys, feature_cache):
    csv, run = trained
    run = copy_run(run, tmp_path)
    with open(run / CHECKPOINT, "wb") as handle:
        pickle.dump(Exploit(), handle)
    args = ["predict", csv, "--model", run, "--out", tmp_path / "p.gpkg"]
    assert main([*map(str, args), "--cache-dir", str(feature_cache)]) == 3
    assert not os.path.exists("/tmp/swclip-pwned")
    assert str(run / CHECKPOINT) in capsys.readouterr().err


# ---- disk full: a small tmpfs, mounted by the test (root only) ----


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of a given size under tmp_path; skipped where mounting is not permitted."""
    mounted = []

    def mount(size: str):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


FULL = "No space left on device while writing"


def test_train_on_a_full_disk_exits_5_and_leaves_no_partial(tmp_path, small_disk, feature_cache):
    csv = samples_csv(tmp_path)
    disk = small_disk("4m")  # config and samples fit, a 48 MB checkpoint does not
    run = disk / "run"
    result = swclip(*train_args(csv, run, feature_cache, "--epochs", 2))
    result.assert_error(5, FULL, str(run / CHECKPOINT), "free space and run again")
    assert not partials(disk) and not (run / CHECKPOINT).exists()
    assert not (run / METRICS).exists() or not (run / METRICS).read_text()  # no epoch line


def test_predict_on_a_full_disk_exits_5_and_leaves_no_partial(
    trained, tmp_path, small_disk, feature_cache
):
    csv, run = trained
    disk = small_disk("64k")
    out = disk / "pred.gpkg"
    result = swclip("predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache)
    result.assert_error(5, FULL, str(out))
    assert list(disk.iterdir()) == []


def test_a_full_feature_cache_is_named(trained, tmp_path, small_disk):
    csv, run = trained
    cache = small_disk("64k")
    out = tmp_path / "pred.gpkg"
    result = swclip("predict", csv, "--model", run, "--out", out, "--cache-dir", cache)
    result.assert_error(5, FULL, str(cache))
    assert not out.exists() and not partials(cache)


# ---- temporary files of killed processes ----


def test_partials_of_dead_processes_are_cleaned_at_the_next_run(trained, tmp_path, feature_cache):
    csv, run = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = [
        tmp_path / f".pred.{dead}.partial.gpkg",
        tmp_path / f".pred.{dead}.partial.gpkg-journal",
    ]
    live = tmp_path / ".pred.1.partial.gpkg"  # of a process that is running (pid 1 always is)
    for path in [*stale, live]:
        path.write_bytes(b"half a file")
    out = tmp_path / "pred.gpkg"
    args = ["predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache]
    assert main(list(map(str, args))) == 0
    assert out.exists() and live.exists()
    assert not any(path.exists() for path in stale)


def test_a_killed_predict_leaves_nothing_under_the_final_name(trained, tmp_path, feature_cache):
    csv, run = trained
    out = tmp_path / "pred.gpkg"
    process = start("predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".pred.*.partial*")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()  # reaps it and closes its pipes
    assert not out.exists() or process.returncode == 0  # killed before the rename, or finished
    if not out.exists():  # the next run cleans what the killed one left
        args = ["predict", csv, "--model", run, "--out", out, "--cache-dir", feature_cache]
        assert main(list(map(str, args))) == 0
    assert out.exists() and not partials(tmp_path)
