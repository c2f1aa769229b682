"""Outputs of the plugin's algorithms appear complete or not at all.

The plugin cannot import swclip_core (it runs in QGIS, without torch), so it keeps these helpers
of its own for the files and folders it writes itself: staging next to the target, and finding
the staging folders that a training left when QGIS closed or crashed during it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".swclip.lock"  # swclip_core.runlock.LOCK_FILE; a test keeps them equal
CHECKPOINT = "checkpoint.pt"  # swclip_core.runs.CHECKPOINT; likewise
METRICS = "metrics.jsonl"  # swclip_core.runs.METRICS (one line per finished epoch); likewise


@contextmanager
def staged(target: Path, reuse: Path | None = None) -> Iterator[Path]:
    """A hidden sibling of ``target`` to write a file or a folder into; moved onto ``target``
    when the block succeeds, removed whatever else happens.

    ``reuse``: a staging folder left by an interrupted run, written into again (a resumed
    training); it is kept if the block fails, as it was found.

    An existing ``target`` folder is replaced only when it is empty (:class:`OSError` otherwise,
    so a user's folder is never lost); an existing file is replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = reuse or target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        yield staging
        if target.is_dir():
            target.rmdir()
        staging.replace(target)
    finally:
        if reuse is not None:
            pass  # a resumed training's folder stays as it was found (or became the target)
        elif staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)


def in_use(folder: Path) -> bool:
    """Whether a running swclip process holds ``folder`` (the run lock the backend takes in it;
    the kernel drops it when that process ends, however it ends)."""
    lock = folder / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # no flock on this system: a lock file is all there is to go by
        return lock.exists()
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases our own lock, if we got it
    return False


def interrupted_trainings(target: Path) -> list[Path]:
    """The staging folders of ``target`` that hold a training's checkpoint and that no running
    process owns: what a run left when QGIS closed or crashed during it. Newest first."""
    target = Path(target)
    found = [
        folder
        for folder in target.parent.glob(f".{target.name}.*.partial")
        if (folder / CHECKPOINT).is_file() and not in_use(folder)
    ]
    return sorted(found, key=lambda folder: (folder / CHECKPOINT).stat().st_mtime, reverse=True)


def epochs_done(run_dir: Path) -> int:
    """How many epochs a (possibly interrupted) run finished: the lines of its metrics.jsonl."""
    try:
        return len((Path(run_dir) / METRICS).read_text(encoding="utf-8").splitlines())
    except OSError:
        return 0
