"""`swclip` as a user runs it: a separate process, judged by its exit code and what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .conftest import REPO


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def assert_error(self, code: int, *words: str) -> None:
        """Exit ``code`` with ONE ``swclip: error:`` line naming ``words``, and no traceback."""
        assert self.code == code, (self.code, self.out, self.err)
        assert "Traceback" not in self.err + self.out, self.err
        errors = [line for line in self.err.splitlines() if line.startswith("swclip: error:")]
        assert len(errors) == 1, self.err
        for word in words:
            assert word in errors[0], (word, errors[0])


def swclip(*args: object, timeout: float = 600, env: dict | None = None) -> Outcome:
    """Run ``python -m swclip_core.cli ARGS`` with this checkout's code; wait for it."""
    return finish(start(*args, env=env), timeout)


def start(*args: object, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "swclip_core.cli", *map(str, args)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> Outcome:
    out, err = process.communicate(timeout=timeout)
    return Outcome(process.returncode, out, err)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: to show that nothing was modified."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def partials(folder: Path) -> list[str]:
    """Temporary files left behind under ``folder``."""
    return sorted(str(p) for p in Path(folder).rglob("*") if "partial" in p.name)
