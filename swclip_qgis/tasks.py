"""Background work for the dock panel: one worker request as a cancellable QgsTask.

run() executes in a QGIS worker thread and only talks to the backend process; it stores the result
or the exception. finished() runs on the main thread and hands both to a callback, which is where
layers may be touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask

from .runner import run_worker

LOG_TAG = "SW-CLIP"


class TaskFeedback:
    """The runner's feedback interface on top of a QgsTask: cancel and progress are the task's."""

    def __init__(self, task: QgsTask) -> None:
        self._task = task

    def isCanceled(self) -> bool:
        return self._task.isCanceled()

    def setProgress(self, progress: float) -> None:
        self._task.setProgress(progress)

    def pushInfo(self, info: str) -> None:
        # QgsMessageLog is thread-safe; the panel shows the log tab "SW-CLIP".
        QgsMessageLog.logMessage(info, LOG_TAG, Qgis.Info)


class WorkerTask(QgsTask):
    """``swclip COMMAND ARGS`` in the backend, reported to ``on_done(task)`` on the main thread.

    After it ends, ``task.result_message`` holds the worker's result (success) or
    ``task.exception`` the error (failure, cancel).
    """

    def __init__(
        self,
        description: str,
        command: str,
        args: Sequence[Any],
        on_done: Callable[[WorkerTask], None],
    ) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.command = command
        self.args = list(args)
        self.on_done = on_done
        self.result_message: dict[str, Any] | None = None
        self.exception: Exception | None = None

    def run(self) -> bool:
        try:
            self.result_message = run_worker(self.command, self.args, TaskFeedback(self))
        except Exception as error:  # reported by finished() on the main thread
            self.exception = error
            return False
        return True

    def finished(self, result: bool) -> None:
        self.on_done(self)
