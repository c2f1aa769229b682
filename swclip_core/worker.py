"""JSON-lines entry point that the QGIS plugin drives: ``python -m swclip_core.worker``.

The plugin never imports torch into QGIS (docs/architecture.md); it starts this module in the
backend Python instead and talks to it through pipes:

- stdin: ONE JSON request, ``{"command": "train", "args": ["points.gpkg", "--out", "run"]}``.
  ``command`` and ``args`` are exactly what ``swclip COMMAND ARGS...`` takes, parsed by the same
  parser (:func:`swclip_core.cli.build_parser`), so every command-line option works identically.
- stdout: one JSON object per line, in this order:
  ``{"type": "started", "protocol": 1, "version": "...", "command": "train"}``, then any number of
  ``{"type": "progress", "fraction": 0.42, "message": "epoch 3/30"}`` and
  ``{"type": "log", "message": "...", "stream": "stdout"|"stderr"}``, then exactly one of
  ``{"type": "result", "exit_code": 0|4, "command": ..., "options": {...}}`` or
  ``{"type": "error", "message": ..., "exit_code": 1|2|3|130, "cancelled": bool}``.
- stderr: free text (warnings, tracebacks); the plugin keeps its tail to explain a crash.
- exit code: the command's own (see ``swclip --help``), also when the request was bad (2).

Cancel: the plugin terminates the process. SIGTERM (and SIGINT) stop the command at once; outputs
are written under temporary names and renamed when complete (io.atomic_path), so nothing
partial is left behind, and a ``cancelled`` error line is written if there is still time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

PROTOCOL_VERSION = 1
EXIT_BAD_REQUEST = 2
EXIT_CANCELLED = 130
PROGRESS_INTERVAL_S = 0.2  # enough for a progress bar; a training step can be much faster


class Channel:
    """The protocol stream: one JSON object per line, flushed at once, safe across threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Write ``message`` as one line (NaN and infinity become null: JSON has neither)."""
        line = json.dumps(_json_safe(message), allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class LogStream(io.TextIOBase):
    """A text stream whose complete lines become ``log`` messages (what the CLI prints).

    ``echo`` also receives the text, so stderr output still reaches the real stderr, whose tail
    the plugin shows when the worker dies without an error line.
    """

    def __init__(self, channel: Channel, name: str, echo: TextIO | None = None) -> None:
        super().__init__()
        self._channel = channel
        self._name = name
        self._echo = echo
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._echo is not None:
            self._echo.write(text)
            self._echo.flush()
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._channel.send({"type": "log", "message": line, "stream": self._name})
        return len(text)

    def flush(self) -> None:
        if self._echo is not None:
            self._echo.flush()


def progress_reporter(
    channel: Channel, min_interval_s: float = PROGRESS_INTERVAL_S
) -> Callable[[float, str], None]:
    """A ``progress(fraction, message)`` callback that sends throttled ``progress`` lines.

    A line goes out when the message changes, at the end, or ``min_interval_s`` after the last one.
    """
    last = {"time": -math.inf, "message": None}

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        fraction = min(max(float(fraction), 0.0), 1.0)
        if message == last["message"] and fraction < 1.0 and now - last["time"] < min_interval_s:
            return
        last.update(time=now, message=message)
        channel.send({"type": "progress", "fraction": round(fraction, 4), "message": message})

    return report


class BadRequest(Exception):
    """The request on stdin is not what the protocol expects."""


def parse_request(text: str) -> list[str]:
    """The ``swclip`` argument list of a request: ``[command, *args]``."""
    try:
        request = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"the request is not JSON ({error})") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise BadRequest('the request must be an object like {"command": "train", "args": [...]}')
    args = request.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise BadRequest('"args" must be a list of strings (the command-line arguments)')
    return [request["command"], *args]


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse with the CLI's own parser; argparse's complaint becomes a :class:`BadRequest`."""
    from .cli import build_parser

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return build_parser().parse_args(argv)
    except SystemExit:
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        raise BadRequest(lines[-1] if lines else f"cannot parse {argv}") from None


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options, JSON-ready (callbacks left out): where the outputs went."""
    return {k: v for k, v in vars(args).items() if k not in ("progress", "cancel")}


class Cancelled:
    """Set by SIGTERM/SIGINT; polled by long loops through the command's ``cancel`` callback."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: object) -> None:
        self.requested = True
        # Stop now, not at the next batch: feature extraction of a large layer takes minutes.
        raise KeyboardInterrupt


def run(request_text: str, channel: Channel) -> int:
    """Carry out one request, reporting through ``channel``; returns the exit code."""
    from . import __version__
    from .cli import COMMANDS, cancel_message, run_command
    from .errors import SwclipError

    try:
        argv = parse_request(request_text)
        channel.send(
            {"type": "started", "protocol": PROTOCOL_VERSION, "version": __version__,
             "command": argv[0]}
        )  # fmt: skip
        args = parse_arguments(argv)
        if args.command not in COMMANDS:
            raise BadRequest(f"unknown command {args.command!r}")
    except BadRequest as error:
        channel.send({"type": "error", "message": str(error), "exit_code": EXIT_BAD_REQUEST,
                      "cancelled": False})  # fmt: skip
        return EXIT_BAD_REQUEST

    cancelled = Cancelled()
    args.progress = progress_reporter(channel)
    args.cancel = cancelled
    signal.signal(signal.SIGTERM, cancelled.handle)
    signal.signal(signal.SIGINT, cancelled.handle)
    try:
        exit_code = run_command(args)
    except KeyboardInterrupt:
        message = f"swclip {args.command} {cancel_message(args)}"
        return _send_error(channel, message, EXIT_CANCELLED, True)
    except SwclipError as error:
        was_cancelled = error.exit_code == EXIT_CANCELLED or cancelled.requested
        return _send_error(channel, str(error), error.exit_code, was_cancelled)
    except Exception as error:  # the plugin must get a message, never a silent death
        traceback.print_exc(file=sys.stderr)
        message = f"unexpected {type(error).__name__}: {error} (the traceback is in the log)"
        return _send_error(channel, message, 1, False)
    finally:
        # Nothing left to clean up once the command has returned: a late signal just exits.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    channel.send({"type": "result", "exit_code": exit_code, "command": args.command,
                  "options": option_values(args)})  # fmt: skip
    return exit_code


def _send_error(channel: Channel, message: str, exit_code: int, cancelled: bool) -> int:
    channel.send(
        {"type": "error", "message": message, "exit_code": exit_code, "cancelled": cancelled}
    )
    return exit_code


def protocol_channel() -> Channel:
    """Claim stdout for the protocol and send every other write to stdout into the log.

    Native libraries may write to file descriptor 1 directly; that must not corrupt the JSON
    stream, so the protocol gets a duplicate of fd 1 and fd 1 itself is pointed at stderr.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    stream = open(protocol_fd, "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
    return Channel(stream)


def main() -> int:
    """Read the request from stdin, run it, answer in JSON lines on stdout."""
    # tqdm reads TQDM_* variables when it is first imported (the commands import it lazily):
    # progress goes through the protocol instead of bars on stderr.
    os.environ["TQDM_DISABLE"] = "1"
    channel = protocol_channel()
    real_stderr = sys.stderr
    sys.stdout = LogStream(channel, "stdout")
    sys.stderr = LogStream(channel, "stderr", echo=real_stderr)
    try:
        return run(sys.stdin.read(), channel)
    finally:
        sys.stdout.flush()
        sys.stderr = real_stderr


if __name__ == "__main__":
    sys.exit(main())
