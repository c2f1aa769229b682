"""One process per run folder: an OS file lock taken before anything is written to it.

Two ``swclip train`` writing to one ``--out`` (two Processing runs given the same model folder)
would otherwise each write their own config, samples and checkpoint into it, leaving a folder
whose files describe different models. The lock is ``fcntl.flock`` on ``.swclip.lock`` in the
folder: the kernel drops it when its process ends however it ends (kill -9 included), so a
stale lock never blocks a later run. The file holds the holder's pid, to name it to the
process that is refused.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .distributed import is_main
from .errors import DiskFullError, InputError
from .io import disk_full

LOCK_FILE = ".swclip.lock"


class RunLock:
    """``with RunLock(folder):`` owns ``folder`` (created if needed) for the block, or raises
    :class:`InputError` (exit 2) naming the folder and the process that owns it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(
                    f"{self.folder} is in use by another swclip process (pid {holder}); wait for "
                    "it to finish, or choose another output folder"
                ) from None
            # The holder before us may have removed the file after we opened it: then our lock
            # is on a file nobody else will see, so start again on the current one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            self.__exit__(type(error), error, None)
            if disk_full(error, self.folder):
                raise DiskFullError(self.path) from error
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        # Removed while still held, so no other process can lock this file after us.
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if error is not None and self._created and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a run that failed before writing anything leaves no folder


def owns_run_folder(train: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``train(samples, config, run_dir, ..., resume=...)`` to hold :class:`RunLock` on
    ``run_dir`` while it runs; ``resume`` of a folder that does not exist is refused first (the
    lock would create it). Under torchrun the main process (rank 0), the only one that writes the
    folder, holds the lock for all of them: the others would be refused by their own group."""

    @functools.wraps(train)
    def locked(samples: Any, config: Any, run_dir: str | os.PathLike, **options: Any) -> Any:
        if options.get("resume") and not Path(run_dir).is_dir():
            raise InputError(
                f"--resume: {run_dir} does not exist, so there is no run to continue; leave out "
                "--resume to start a new one"
            )
        if not is_main():
            return train(samples, config, run_dir, **options)
        with RunLock(run_dir):
            return train(samples, config, run_dir, **options)

    return locked
