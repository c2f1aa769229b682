"""The plugin's own file helpers: staging, and the trainings that QGIS left when it closed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from swclip_qgis import files


def interrupted(parent, name: str, epochs: int, age_s: float = 0.0):
    """A staging folder as an interrupted training leaves it: checkpoint and finished epochs."""
    folder = parent / name
    folder.mkdir()
    (folder / files.CHECKPOINT).write_bytes(b"weights")
    (folder / files.METRICS).write_text(
        "".join(f'{{"epoch": {e}}}\n' for e in range(1, epochs + 1))
    )
    stamp = time.time() - age_s
    os.utime(folder / files.CHECKPOINT, (stamp, stamp))
    return folder


def test_the_copies_of_the_backends_file_names_match() -> None:
    from swclip_core import runlock, runs

    assert files.LOCK_FILE == runlock.LOCK_FILE
    assert files.CHECKPOINT == runs.CHECKPOINT
    assert files.METRICS == runs.METRICS


def test_a_reused_staging_folder_becomes_the_target_or_stays_as_it_was(tmp_path) -> None:
    left = interrupted(tmp_path, ".model.0badcafe.partial", epochs=2)
    with pytest.raises(RuntimeError), files.staged(tmp_path / "model", reuse=left) as staging:
        assert staging == left
        raise RuntimeError("the resumed training failed")
    assert files.epochs_done(left) == 2 and not (tmp_path / "model").exists()  # kept as found
    with files.staged(tmp_path / "model", reuse=left):
        pass
    assert files.epochs_done(tmp_path / "model") == 2 and not left.exists()


def test_interrupted_trainings_are_the_unowned_staging_folders_with_a_checkpoint(tmp_path) -> None:
    older = interrupted(tmp_path, ".model.00000001.partial", epochs=3, age_s=60)
    newer = interrupted(tmp_path, ".model.00000002.partial", epochs=1)
    (tmp_path / ".model.00000003.partial").mkdir()  # nothing written yet: nothing to continue
    interrupted(tmp_path, ".other.00000004.partial", epochs=2)  # another model folder's
    owned = interrupted(tmp_path, ".model.00000005.partial", epochs=2)
    (owned / files.LOCK_FILE).write_text("1\n")
    # a running training holds its folder's lock (flock), as the backend's run lock does
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(owned / files.LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert files.in_use(owned)
        assert files.interrupted_trainings(tmp_path / "model") == [newer, older]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # its process is gone (killed, however it ended): the lock went with it
    assert not files.in_use(owned)
    assert files.interrupted_trainings(tmp_path / "model") == [owned, newer, older]
    assert files.epochs_done(tmp_path / "nowhere") == 0
