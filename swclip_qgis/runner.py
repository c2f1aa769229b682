"""Run one ``swclip_core.worker`` request in the backend Python and follow it to the end.

The worker answers in JSON lines (see ``swclip_core/worker.py``): progress and log lines are
forwarded to the feedback object while it runs, and the feedback's cancel flag is polled all the
time, so cancelling terminates the process within seconds whatever it is doing. A worker that dies
without its final line (killed, out of memory, a crash in native code) is reported with the exit
status and the last lines it wrote to stderr.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess  # nosec B404: the backend is a separate interpreter by design
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from typing import IO, Any, Protocol

from .backend import child_environment, find_backend

WORKER_MODULE = "swclip_core.worker"
POLL_INTERVAL_S = 0.1
TERMINATE_GRACE_S = 5.0  # after SIGTERM, how long the worker may take to clean up before SIGKILL
STDERR_TAIL_LINES = 20
EXIT_PARTIAL = 4  # the command finished but skipped some records (listed in skipped.csv)


class Feedback(Protocol):
    """What the runner needs from QgsProcessingFeedback (or a QgsTask adapter)."""

    def isCanceled(self) -> bool: ...

    def setProgress(self, progress: float) -> None: ...

    def pushInfo(self, info: str) -> None: ...


class WorkerFailed(Exception):
    """The worker reported an error, was cancelled, or died; ``str()`` is the message to show."""

    def __init__(self, message: str, *, exit_code: int | None, cancelled: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.cancelled = cancelled


def _read_lines(stream: IO[str], sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)  # end of stream


def _keep_tail(stream: IO[str], tail: deque) -> None:
    for line in stream:
        if line.strip():
            tail.append(line.rstrip())


def stop_process(process: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``process`` (it cleans up its temporary files), then kill it if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def describe_exit(returncode: int) -> str:
    """Why a process ended, in words an analyst can act on."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == getattr(signal, "SIGKILL", 9):
            return (
                f"the backend was killed ({name}), most often because the computer ran out of "
                "memory; try a smaller --batch-size, fewer photos at once, or the cpu device"
            )
        return f"the backend stopped on {name}"
    return f"the backend exited with code {returncode} without a result"


def run_worker(
    command: str,
    args: Sequence[Any],
    feedback: Feedback,
    *,
    python: str | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
    grace_s: float = TERMINATE_GRACE_S,
) -> dict[str, Any]:
    """Run ``swclip COMMAND ARGS...`` in the backend; return the worker's ``result`` message.

    Args:
        command: a ``swclip`` command (train, predict, evaluate, ...).
        args: its command-line arguments (converted with ``str``).
        feedback: progress (0-100), log lines and the cancel flag.
        python: the backend interpreter; found with :func:`find_backend` when not given.

    Raises:
        BackendNotFound: no usable backend Python (``python`` not given).
        WorkerFailed: the command failed, was cancelled, or the worker died.
    """
    python = python or find_backend().python
    request = json.dumps({"command": command, "args": [str(a) for a in args]})
    # `python -m` puts the working directory first on sys.path: an empty one cannot shadow anything.
    with tempfile.TemporaryDirectory(prefix="swclip-worker-") as empty_dir:
        try:
            process = subprocess.Popen(  # nosec B603: argument list, no shell; the user's backend
                [python, "-m", WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=child_environment(),
                cwd=empty_dir,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except OSError as error:
            raise WorkerFailed(
                f"the backend Python {python} cannot be started ({error.strerror or error})",
                exit_code=None,
            ) from None
        try:
            return _follow(process, request, feedback, poll_interval_s, grace_s)
        finally:
            stop_process(process, grace_s)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None and not stream.closed:
                    stream.close()


def _follow(
    process: subprocess.Popen,
    request: str,
    feedback: Feedback,
    poll_interval_s: float,
    grace_s: float,
) -> dict[str, Any]:
    try:
        process.stdin.write(request)
        process.stdin.close()
    except OSError:
        pass  # it died at once: its exit status and stderr below say why
    lines: queue.Queue = queue.Queue()
    stderr_tail: deque = deque(maxlen=STDERR_TAIL_LINES)
    readers = [
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True),
        threading.Thread(target=_keep_tail, args=(process.stderr, stderr_tail), daemon=True),
    ]
    for reader in readers:
        reader.start()

    outcome: dict[str, Any] | None = None
    while True:
        if feedback.isCanceled():
            stop_process(process, grace_s)
            raise WorkerFailed("cancelled; nothing was written", exit_code=None, cancelled=True)
        try:
            line = lines.get(timeout=poll_interval_s)
        except queue.Empty:
            continue
        if line is None:
            break
        message = _decode(line)
        if message is None:
            if line.strip():
                feedback.pushInfo(line.rstrip())
            continue
        kind = message.get("type")
        if kind == "progress":
            feedback.setProgress(100.0 * float(message.get("fraction") or 0.0))
            if hasattr(feedback, "setProgressText"):
                feedback.setProgressText(str(message.get("message", "")))
        elif kind == "log":
            feedback.pushInfo(str(message.get("message", "")))
        elif kind in ("result", "error"):
            outcome = message
    returncode = process.wait()
    for reader in readers:
        reader.join(timeout=grace_s)

    if outcome is not None and outcome["type"] == "error":
        raise WorkerFailed(
            str(outcome.get("message")),
            exit_code=outcome.get("exit_code"),
            cancelled=bool(outcome.get("cancelled")),
        )
    if outcome is None:
        tail = "\n".join(stderr_tail)
        details = f"; its last messages:\n{tail}" if tail else ""
        raise WorkerFailed(describe_exit(returncode) + details, exit_code=returncode)
    return outcome


def _decode(line: str) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "type" in message else None


def run_logged(
    argv: Sequence[Any], feedback: Feedback, *, grace_s: float = TERMINATE_GRACE_S
) -> None:
    """Run a plain command (venv, pip), streaming its output lines to ``feedback.pushInfo``.

    Raises:
        WorkerFailed: it cannot start, exits with a non-zero code, or is cancelled.
    """
    argv = [str(a) for a in argv]
    try:
        process = subprocess.Popen(  # nosec B603: argument list, no shell; fixed programs
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_environment(),
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
    except OSError as error:
        raise WorkerFailed(f"{argv[0]} cannot be started ({error.strerror or error})",
                           exit_code=None) from None  # fmt: skip
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    tail: deque = deque(maxlen=STDERR_TAIL_LINES)
    try:
        while True:
            if feedback.isCanceled():
                stop_process(process, grace_s)
                raise WorkerFailed("cancelled", exit_code=None, cancelled=True)
            try:
                line = lines.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.strip():
                tail.append(line.rstrip())
                feedback.pushInfo(line.rstrip())
    finally:
        stop_process(process, grace_s)
        process.stdout.close()
    if process.returncode != 0:
        last = "\n".join(tail)
        raise WorkerFailed(
            f"`{' '.join(argv[:4])} ...` failed with exit code {process.returncode}:\n{last}",
            exit_code=process.returncode,
        )
