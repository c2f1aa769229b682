"""The plugin's worker runner against misbehaving backends: real processes, no mocks.

Each fake backend is a small Python script made executable and passed as the backend "Python"
(the runner starts it as ``<script> -m swclip_core.worker``; the script ignores its arguments).
A hang would block the suite, so every run is watched from a thread with a generous deadline.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from swclip_qgis.runner import MAX_LINE_CHARS, WorkerFailed, run_logged, run_worker

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the fake backends are POSIX scripts")

HANG_GUARD_S = 120.0  # far above the runner's own deadlines below: only a real hang exceeds it
FAST = {"poll_interval_s": 0.05, "grace_s": 1.0, "end_grace_s": 1.0}


class Recorder:
    """The runner's feedback: keeps what it is told; cancels once a chosen text is seen."""

    def __init__(self, cancel_on: str | None = None) -> None:
        self.infos: list[str] = []
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.cancel_on = cancel_on
        self.cancelled = False

    def isCanceled(self) -> bool:
        return self.cancelled

    def setProgress(self, progress: float) -> None:
        self.progress.append(progress)

    def setProgressText(self, text: str) -> None:
        self.texts.append(text)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)
        if self.cancel_on and self.cancel_on in info:
            self.cancelled = True


def fake_backend(tmp_path: Path, body: str) -> str:
    """An executable Python script whose stdout/stderr play the worker."""
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, subprocess, sys, time\nsys.stdin.read()\n{body}\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return str(script)


def write_pid(path: Path, pid: str = "os.getpid()") -> str:
    """A line of a fake backend's script that writes ``pid`` (an expression) to ``path``, so that a
    test can check afterwards that the runner left no process behind."""
    return f"open({str(path)!r}, 'w').write(str({pid}))"


def pid_recording_backend(tmp_path: Path, body: str) -> tuple[str, Path]:
    """A :func:`fake_backend` that first writes its process id; returns it and the pid's file."""
    pid_file = tmp_path / "pid"
    return fake_backend(tmp_path, f"{write_pid(pid_file)}\n{body}"), pid_file


def run_guarded(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a thread; fails the test if it does not return."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the test below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"{function.__name__} hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def is_running(pid: int) -> bool:
    """Whether ``pid`` still runs, allowing a few seconds for a signal sent to it to land."""
    for _ in range(100):
        if not _alive(pid):
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not running
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def progress(fraction: object, message: str = "working") -> str:
    message_json = f"{{'type': 'progress', 'fraction': {fraction!r}, 'message': {message!r}}}"
    return f"print(json.dumps({message_json}), flush=True)"


RESULT = (
    "print(json.dumps({'type': 'result', 'exit_code': 0, 'options': {'out': 'x'}}), flush=True)"
)


def test_a_backend_that_closes_stdout_but_keeps_running_is_stopped(tmp_path) -> None:
    python, pid_file = pid_recording_backend(
        tmp_path, f"{progress(0.5)}\nos.close(1)\nsys.stdout = None\ntime.sleep(600)"
    )
    with pytest.raises(WorkerFailed) as caught:
        run_guarded(run_worker, "predict", [], Recorder(), python=python, **FAST)
    assert "stopped answering" in str(caught.value)
    assert not is_running(int(pid_file.read_text()))


def test_cancel_is_honoured_after_the_backend_closed_stdout(tmp_path) -> None:
    python = fake_backend(
        tmp_path,
        "print(json.dumps({'type': 'log', 'message': 'closing'}), flush=True)\n"
        "os.close(1)\ntime.sleep(600)",
    )
    feedback = Recorder(cancel_on="closing")
    # A grace period far longer than the guard: only the cancel can end this run in time.
    with pytest.raises(WorkerFailed) as caught:
        run_guarded(run_worker, "predict", [], feedback, python=python, poll_interval_s=0.05,
                    grace_s=1.0, end_grace_s=10 * HANG_GUARD_S)  # fmt: skip
    assert caught.value.cancelled


@pytest.mark.parametrize("sends_result", [True, False])
def test_a_child_holding_the_pipe_neither_hangs_the_run_nor_survives_it(
    tmp_path, sends_result
) -> None:
    child_pid = tmp_path / "child"
    python = fake_backend(
        tmp_path,
        # the child inherits stdout and stderr and outlives its parent
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"{write_pid(child_pid, 'child.pid')}\n"
        + (RESULT if sends_result else "sys.stderr.write('crashed in native code\\n')")
        + "\nos._exit(0 if "
        + str(sends_result)
        + " else 3)",
    )
    if sends_result:
        result = run_guarded(run_worker, "predict", [], Recorder(), python=python, **FAST)
        assert result["options"] == {"out": "x"}
    else:
        with pytest.raises(WorkerFailed) as caught:
            run_guarded(run_worker, "predict", [], Recorder(), python=python, **FAST)
        assert caught.value.exit_code == 3
        assert "exited with code 3" in str(caught.value)
    assert not is_running(int(child_pid.read_text()))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "progress", "fraction": "abc"}', '"fraction" of a "progress" message'),
        ('{"type": "progress", "fraction": true}', '"fraction" of a "progress" message'),
        ('{"type": "progress"}', 'without "fraction"'),
        ('{"type": "progress", "fraction": NaN}', "NaN is not a number"),
        ('{"type": "progress", "fraction": 1e999}', "out of range"),
        ('{"type": "log", "message": ["a", "list"]}', '"message" of a "log" message'),
        ('{"type": "result", "exit_code": "0"}', '"exit_code" of a "result" message'),
        ('{"type": "result", "exit_code": 0, "options": []}', '"options" of a "result"'),
        ('{"type": "error", "message": null, "exit_code": 1}', '"message" of a "error"'),
        ("[1, 2, 3]", "a JSON list instead of an object"),
        ('{"message": "no type"}', 'no "type"'),
        ("Traceback (most recent call last):", "not JSON"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("x" * (MAX_LINE_CHARS + 10), "longer than"),
    ],
    ids=lambda value: value[:40],
)
def test_a_malformed_message_fails_the_run_readably(tmp_path, line, expected) -> None:
    payload = tmp_path / "line.txt"
    payload.write_text(line, encoding="utf-8")
    python, pid_file = pid_recording_backend(
        tmp_path, f"print(open({str(payload)!r}).read(), flush=True)\n{RESULT}\ntime.sleep(600)"
    )
    with pytest.raises(WorkerFailed) as caught:
        run_guarded(run_worker, "predict", [], Recorder(), python=python, **FAST)
    message = str(caught.value)
    assert "malformed message" in message and expected in message
    assert len(message) < 500 and "\n" not in message
    assert not is_running(int(pid_file.read_text()))


def test_progress_fills_its_span_and_never_goes_down(tmp_path) -> None:
    python = fake_backend(
        tmp_path,
        "\n".join(
            [progress(0.5, "features 5/10"), progress(0.2, "epoch 1/2"),
             progress(0.9, "epoch 2/2"), progress(7, "past the end"), RESULT]
        ),
    )  # fmt: skip
    feedback = Recorder()
    run_guarded(run_worker, "train", [], feedback, python=python, progress_span=(10.0, 90.0),
                **FAST)  # fmt: skip
    assert feedback.progress == [50.0, 82.0, 90.0]  # the result, at 1.0, adds nothing
    assert feedback.texts == ["features 5/10", "epoch 1/2", "epoch 2/2", "past the end"]


def test_run_logged_stops_a_command_that_closes_its_output_and_lingers(tmp_path) -> None:
    script = fake_backend(
        tmp_path, "print('step 1', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(600)"
    )
    feedback = Recorder()
    with pytest.raises(WorkerFailed) as caught:
        run_guarded(run_logged, [script], feedback, grace_s=1.0, end_grace_s=1.0)
    assert "did not exit" in str(caught.value)
    assert feedback.infos == ["step 1"]


class WarningRecorder(Recorder):
    """A feedback that can show warnings apart, as QgsProcessingFeedback does."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []

    def pushWarning(self, warning: str) -> None:
        self.warnings.append(warning)


def test_what_the_backend_writes_to_stderr_is_shown_as_a_warning(tmp_path) -> None:
    def log(message: str, stream: str) -> str:
        line = {"type": "log", "message": message, "stream": stream}
        return f"print(json.dumps({line!r}), flush=True)"

    python = fake_backend(
        tmp_path,
        "\n".join([log("localized 3 photos", "stdout"),
                   log("swclip: warning: 3 of these 3 photos trained the model", "stderr"),
                   RESULT]),
    )  # fmt: skip
    feedback = WarningRecorder()
    run_guarded(run_worker, "predict", [], feedback, python=python, **FAST)
    assert feedback.infos == ["localized 3 photos"]
    assert feedback.warnings == ["swclip: warning: 3 of these 3 photos trained the model"]
    plain = Recorder()  # a feedback without warnings gets them as information
    run_guarded(run_worker, "predict", [], plain, python=python, **FAST)
    assert plain.infos == [
        "localized 3 photos",
        "swclip: warning: 3 of these 3 photos trained the model",
    ]
