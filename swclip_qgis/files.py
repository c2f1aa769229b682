"""Outputs of the plugin's algorithms appear complete or not at all.

The plugin cannot import swclip_core (it runs in QGIS, without torch), so it keeps this one helper
of its own for the files and folders it writes itself.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A hidden sibling of ``target`` to write a file or a folder into; moved onto ``target``
    when the block succeeds, removed whatever happens.

    An existing ``target`` folder is replaced only when it is empty (:class:`OSError` otherwise,
    so a user's folder is never lost); an existing file is replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        yield staging
        if target.is_dir():
            target.rmdir()
        staging.replace(target)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
