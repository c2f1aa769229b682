"""Run one ``swclip_core.worker`` request in the backend Python and follow it to the end.

The worker answers in JSON lines (see ``swclip_core/worker.py``): progress and log lines are
forwarded to the feedback object while it runs, and the feedback's cancel flag is polled all the
time, so cancelling terminates the process within seconds whatever it is doing. A worker that dies
without its final line (killed, out of memory, a crash in native code) is reported with the exit
status and the last lines it wrote to stderr.

Nothing here waits without a deadline: the pipes are read by daemon threads that never block the
caller; after the end of the output (or the worker's exit) the process gets a grace period and is
then terminated and killed, with its whole process group (a child that inherited the pipe too).
Every line that is not a well-formed protocol message stops the run with :class:`WorkerFailed`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shlex
import signal
import subprocess  # nosec B404: the backend is a separate interpreter by design
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

from .backend import backend_variables, child_environment, find_backend

WORKER_MODULE = "swclip_core.worker"
POLL_INTERVAL_S = 0.1
TERMINATE_GRACE_S = 5.0  # after SIGTERM, how long the worker may take to clean up before SIGKILL
END_GRACE_S = 5.0  # after its last line (or its exit), how long the worker may take to finish
STDERR_TAIL_LINES = 20
STDERR_LINE_CHARS = 2000
MAX_LINE_CHARS = 1_000_000  # a protocol line is a few hundred characters; this is a broken one
EXIT_PARTIAL = 4  # the command finished but skipped some records (listed in skipped.csv)
# How the backend's warnings begin on stderr (swclip_core.cli.WARNING_PREFIX; a test keeps them
# equal).
BACKEND_WARNING = "swclip: warning: "
# New process group on POSIX, so that stopping the worker also stops the children it started.
_OWN_GROUP = os.name == "posix"


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


class MalformedMessage(ValueError):
    """A stdout line that is not a protocol message; ``str()`` says what is wrong with it."""


class _TooLong:
    """Stands in the line queue for a line longer than the limit (its text is dropped)."""


def _read_lines(stream: IO[str], sink: queue.Queue, limit: int = MAX_LINE_CHARS) -> None:
    """Put every line of ``stream`` in ``sink`` (at most ``limit`` characters), then None."""
    try:
        while True:
            line = stream.readline(limit + 1)
            if not line:
                break
            if len(line) > limit and not line.endswith("\n"):
                sink.put(_TooLong())
                while line and not line.endswith("\n"):  # skip the rest of it
                    line = stream.readline(limit)
                continue
            sink.put(line)
    except (OSError, ValueError):
        pass  # the pipe broke or was closed: that is its end too
    finally:
        sink.put(None)
        _close_quietly(stream)


def _keep_tail(stream: IO[str], tail: deque) -> None:
    try:
        while True:
            line = stream.readline(STDERR_LINE_CHARS)
            if not line:
                break
            if line.strip():
                tail.append(line.rstrip())
    except (OSError, ValueError):
        pass
    finally:
        _close_quietly(stream)


def _close_quietly(stream: IO[str] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except (OSError, ValueError):
        pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the worker's process group (POSIX) or the worker alone."""
    try:
        if _OWN_GROUP:
            os.killpg(process.pid, signum)
        elif signum == getattr(signal, "SIGKILL", None):
            process.kill()
        else:
            process.terminate()
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone


def stop_process(process: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``process`` and its children (it cleans up its temporary files), then kill them
    if they linger. Returns within about ``2 * grace_s`` whatever the process does."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    # Children left behind (still holding the pipes) go too; SIGKILL cannot be ignored.
    _signal_group(process, getattr(signal, "SIGKILL", signal.SIGTERM))
    # Still there after that only when stuck in the kernel: nothing more a user process can do.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def describe_exit(returncode: int | None) -> str:
    """Why a process ended, in words an analyst can act on."""
    if returncode is None:
        return "the backend stopped answering"
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


def _start(argv: list[str], what: str, **streams: Any) -> subprocess.Popen:
    """Start ``argv`` with its stdout as text lines, in the plugin's child environment and, on
    POSIX, a process group of its own (so that stopping it stops its children too); ``streams``
    gives stdin, stderr and cwd. A failure to start is a :class:`WorkerFailed` naming ``what``."""
    try:
        return subprocess.Popen(  # nosec B603: argument list, no shell; the user's backend or venv
            argv,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_environment(),
            start_new_session=_OWN_GROUP,
            # Keep a console window from flashing up on Windows; 0 elsewhere.
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            **streams,
        )
    except OSError as error:
        raise WorkerFailed(
            f"{what} cannot be started ({error.strerror or error})", exit_code=None
        ) from None


def command_line(python: str, command: str, args: Sequence[Any]) -> str:
    """The shell command that runs the same request outside QGIS (``swclip`` with ``python``)."""
    argv = [python, "-m", "swclip_core.cli", command, *(str(a) for a in args)]
    variables = backend_variables()
    if os.name == "nt":
        sets = "".join(f'set "{k}={v}" && ' for k, v in variables.items())
        return sets + subprocess.list2cmdline(argv)
    return shlex.join([f"{k}={v}" for k, v in variables.items()] + argv)


def run_worker(
    command: str,
    args: Sequence[Any],
    feedback: Feedback,
    *,
    python: str | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
    grace_s: float = TERMINATE_GRACE_S,
    end_grace_s: float = END_GRACE_S,
    progress_span: tuple[float, float] = (0.0, 100.0),
) -> dict[str, Any]:
    """Run ``swclip COMMAND ARGS...`` in the backend; return the worker's ``result`` message.

    Args:
        command: a ``swclip`` command (train, predict, evaluate, ...).
        args: its command-line arguments (converted with ``str``).
        feedback: progress, log lines and the cancel flag.
        python: the backend interpreter; found with :func:`find_backend` when not given.
        progress_span: the part of the caller's progress bar (0-100) this run fills; the
            progress it reports never goes down.

    Raises:
        BackendNotFound: no usable backend Python (``python`` not given).
        WorkerFailed: the command failed, was cancelled, sent a malformed message, or died.
    """
    python = python or find_backend().python
    request = json.dumps({"command": command, "args": [str(a) for a in args]})
    # `python -m` puts the working directory first on sys.path: an empty one cannot shadow anything.
    with tempfile.TemporaryDirectory(prefix="swclip-worker-") as empty_dir:
        process = _start(
            [python, "-m", WORKER_MODULE],
            f"the backend Python {python}",
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=empty_dir,
        )
        follower = _Follower(process, feedback, poll_interval_s, end_grace_s, progress_span)
        try:
            return follower.run(request)
        finally:
            stop_process(process, grace_s)


class _Follower:
    """Reads one worker's messages until its outcome, its end, its death or a cancel."""

    def __init__(
        self,
        process: subprocess.Popen,
        feedback: Feedback,
        poll_interval_s: float,
        end_grace_s: float,
        progress_span: tuple[float, float],
    ) -> None:
        self.process = process
        self.feedback = feedback
        self.poll_interval_s = poll_interval_s
        self.end_grace_s = end_grace_s
        self.start, self.end = progress_span
        self.best = -math.inf
        self.lines: queue.Queue = queue.Queue()
        self.stderr_tail: deque = deque(maxlen=STDERR_TAIL_LINES)
        self.stderr_reader = threading.Thread(
            target=_keep_tail, args=(process.stderr, self.stderr_tail), daemon=True
        )

    def run(self, request: str) -> dict[str, Any]:
        # If it died at once, its exit status and stderr below say why.
        with contextlib.suppress(OSError):
            self.process.stdin.write(request)
        _close_quietly(self.process.stdin)
        threading.Thread(
            target=_read_lines, args=(self.process.stdout, self.lines), daemon=True
        ).start()
        self.stderr_reader.start()
        outcome = self.read_until_outcome()
        returncode = self.wait_for_exit()
        if outcome is None:
            raise WorkerFailed(
                describe_exit(returncode) + self.stderr_details(), exit_code=returncode
            )
        if outcome["type"] == "error":
            raise WorkerFailed(
                outcome["message"],
                exit_code=outcome.get("exit_code"),
                cancelled=bool(outcome.get("cancelled")),
            )
        return outcome

    def check_cancel(self) -> None:
        if self.feedback.isCanceled():
            raise WorkerFailed("cancelled; nothing was written", exit_code=None, cancelled=True)

    def read_until_outcome(self) -> dict[str, Any] | None:
        """Handle lines until the result/error message, the end of stdout, or the worker's exit
        plus the grace period (a child of it may keep the pipe open forever)."""
        exited_at: float | None = None
        while True:
            self.check_cancel()
            try:
                line = self.lines.get(timeout=self.poll_interval_s)
            except queue.Empty:
                if self.process.poll() is None:
                    continue
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at < self.end_grace_s:
                    continue
                return None
            if line is None:
                return None
            try:
                message = parse_message(line)
            except MalformedMessage as error:
                raise WorkerFailed(
                    f"the backend sent a malformed message ({error}); is the backend Python "
                    f"running a different SW-CLIP version?{self.stderr_details()}",
                    exit_code=None,
                ) from None
            if message["type"] == "result":
                self.show_progress(1.0)
            if message["type"] in ("result", "error"):
                return message
            self.forward(message)

    def forward(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "progress":
            self.show_progress(message["fraction"])
            text = message.get("message")
            if text and hasattr(self.feedback, "setProgressText"):
                self.feedback.setProgressText(text)
        elif kind == "log":
            # What the command writes to stderr is what it warns about (skipped records, photos
            # the model was trained on): Processing's log shows warnings in their own colour.
            if message.get("stream") == "stderr" and hasattr(self.feedback, "pushWarning"):
                self.feedback.pushWarning(message["message"])
            else:
                self.feedback.pushInfo(message["message"])

    def show_progress(self, fraction: float) -> None:
        """Map the worker's fraction onto the span; never move the bar backwards."""
        value = self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0)
        if value > self.best:
            self.best = value
            self.feedback.setProgress(value)

    def wait_for_exit(self) -> int | None:
        """The exit code, once the worker has had ``end_grace_s`` to finish (None if it has not:
        it is stopped afterwards by :func:`stop_process`)."""
        deadline = time.monotonic() + self.end_grace_s
        while time.monotonic() < deadline:
            self.check_cancel()
            returncode = self.process.poll()
            if returncode is not None:
                return returncode
            time.sleep(self.poll_interval_s)
        return self.process.poll()

    def stderr_details(self) -> str:
        """The last lines of stderr; those of a worker that has exited once they are read
        (a bounded wait: a child of the worker may hold stderr open)."""
        if self.process.poll() is not None:
            self.stderr_reader.join(timeout=self.end_grace_s)
        tail = "\n".join(self.stderr_tail)
        return f"; its last messages:\n{tail}" if tail else ""


# What each message type must carry: field -> (accepted types, required). Others are ignored.
_NUMBER = (int, float)
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "started": {},
    "progress": {"fraction": (_NUMBER, True), "message": ((str,), False)},
    "log": {"message": ((str,), True), "stream": ((str,), False)},
    "result": {"exit_code": ((int,), True), "options": ((dict,), False)},
    "error": {
        "message": ((str,), True),
        "exit_code": ((int, type(None)), False),
        "cancelled": ((bool,), False),
    },
}


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedMessage(f"the number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise MalformedMessage(f"{name} is not a number")


def parse_message(line: str | _TooLong) -> dict[str, Any]:
    """A protocol message from one stdout line, checked against :data:`_SCHEMA`.

    Raises:
        MalformedMessage: not JSON, too long or too deeply nested, not an object with a string
            ``type``, a field of the wrong type, or a number that is not finite.
    """
    if isinstance(line, _TooLong):
        raise MalformedMessage(f"a line longer than {MAX_LINE_CHARS:,} characters")
    try:
        message = json.loads(line, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None
    except MalformedMessage:
        raise
    except ValueError:
        raise MalformedMessage(f"not JSON: {_excerpt(line)}") from None
    if not isinstance(message, dict):
        raise MalformedMessage(f"a JSON {type(message).__name__} instead of an object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise MalformedMessage(f'no "type" text in {_excerpt(line)}')
    for name, (types, required) in _SCHEMA.get(kind, {}).items():
        if name not in message:
            if required:
                raise MalformedMessage(f'a "{kind}" message without "{name}"')
            continue
        value = message[name]
        # bool is an int in Python, but not a number or an exit code in the protocol
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise MalformedMessage(
                f'"{name}" of a "{kind}" message is {_excerpt(json.dumps(value))}, '
                f"not {' or '.join(_type_name(t) for t in types)}"
            )
    return message


def _type_name(kind: type) -> str:
    names = {int: "an integer", float: "a number", str: "a text", dict: "an object",
             bool: "true/false", type(None): "null"}  # fmt: skip
    return names.get(kind, kind.__name__)


def _excerpt(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def run_logged(
    argv: Sequence[Any],
    feedback: Feedback,
    *,
    grace_s: float = TERMINATE_GRACE_S,
    end_grace_s: float = END_GRACE_S,
) -> None:
    """Run a plain command (venv, pip), streaming its output lines to ``feedback.pushInfo``.

    Raises:
        WorkerFailed: it cannot start, exits with a non-zero code, or is cancelled.
    """
    argv = [str(a) for a in argv]
    process = _start(argv, argv[0], stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    tail: deque = deque(maxlen=STDERR_TAIL_LINES)

    def show(line: str | _TooLong) -> None:
        text = "(a line too long to show)" if isinstance(line, _TooLong) else line.rstrip()
        if text.strip():
            tail.append(text)
            feedback.pushInfo(text)

    try:
        returncode = _pump(process, lines, show, feedback.isCanceled, end_grace_s)
    finally:
        stop_process(process, grace_s)
    if returncode is None and feedback.isCanceled():
        raise WorkerFailed("cancelled", exit_code=None, cancelled=True)
    if returncode != 0:
        last = "\n".join(tail)
        raise WorkerFailed(
            f"`{' '.join(argv[:4])} ...` {_ended(returncode)}:\n{last}", exit_code=returncode
        )


def _ended(returncode: int | None) -> str:
    if returncode is None:
        return "closed its output but did not exit"
    return f"failed with exit code {returncode}"


def _pump(
    process: subprocess.Popen,
    lines: queue.Queue,
    show: Callable[[str | _TooLong], None],
    is_canceled: Callable[[], bool],
    end_grace_s: float,
) -> int | None:
    """Show lines until the output ends or the process exits (plus the grace period); then its
    exit code, or None when it was cancelled or did not exit within the grace period."""
    ended_at: float | None = None
    while True:
        if is_canceled():
            return None
        try:
            line = lines.get(timeout=POLL_INTERVAL_S)
        except queue.Empty:
            line = ""
        if line is None or (line == "" and process.poll() is not None):
            ended_at = ended_at or time.monotonic()
        elif line:
            show(line)
            continue
        if ended_at is not None:
            if process.poll() is not None:
                return process.returncode
            if time.monotonic() - ended_at >= end_grace_s:
                return None
