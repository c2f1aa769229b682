"""Files: atomic writes, content digests, the cache folder and the progress callback type.

Every file the toolkit writes goes through :func:`atomic_path`: it is written under a temporary
name in the destination folder and renamed onto its real name only when complete, so a reader, a
crash or a cancel never meets half a file. The helpers below (JSON, CSV, torch, NumPy, GeoPackage,
raw bytes) are that one rule applied to each format; GeoTIFFs and PNGs use :func:`atomic_path`
directly with their own writer.

Nothing here imports torch, pandas or GDAL at module level: this module sits under everything.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DiskFullError, InputError

if TYPE_CHECKING:
    import pandas as pd

ProgressFn = Callable[[float, str], None]
"""``progress(fraction, message)``: a stage reports 0..1 and a short text (the worker, QGIS)."""

# GeoPackage 1.2: the version that the GDAL of QGIS 3.22 (Debian 12) reads without a warning;
# pyogrio's newer GDAL would otherwise write 1.4.
GPKG_OPTIONS = {"VERSION": "1.2"}


def progress_span(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """Map a stage's own 0..1 progress onto [start, end] of the caller's overall progress."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def default_cache_dir() -> Path:
    """``$SWCLIP_CACHE_DIR``, else ``~/.cache/swclip``."""
    return Path(os.environ.get("SWCLIP_CACHE_DIR", Path.home() / ".cache" / "swclip"))


# Digests remembered per process: more than predict's default chunk of 20,000 records, so that
# marking a chunk's photos that trained the model reuses the digests its feature-cache lookup
# just computed instead of reading every photo again (about 0.6 kB each).
DIGESTS_KEPT = 1 << 15
# A file changed this recently is hashed but not remembered: as git does for its index, since
# a change within the file system's timestamp resolution (milliseconds) leaves its status as it
# was, an in-place edit of the same size could otherwise go unseen.
RECENT_NS = 2_000_000_000


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 of a file's content, read in blocks. The last :data:`DIGESTS_KEPT` are remembered by
    path and file status (device, inode, size, modification and change times), so asking again
    for an unchanged file costs a ``stat``; an edited or replaced file is read again."""
    path = os.path.abspath(path)
    status = os.stat(path)
    if time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns) < RECENT_NS:
        return _read_digest(path)
    version = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
    return _remembered_digest(path, version)


def _read_digest(path: str) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=DIGESTS_KEPT)
def _remembered_digest(path: str, version: tuple[int, ...]) -> str:
    # ``version`` is only part of the key: a file whose status changed is a cache miss.
    return _read_digest(path)


def file_digests(paths: Iterable[str]) -> dict[str, str]:
    """:func:`file_digest` of each distinct path of ``paths`` (a layer may list a file many times:
    it is hashed once)."""
    return {path: file_digest(path) for path in dict.fromkeys(paths)}


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix (GDAL and Pillow pick their format from it) and carries
    the process id, so two processes writing the same file never share a temporary one, and the
    temporary files of a process that died (kill -9) are removed by the next write of ``path``.
    A write that fails on a full disk raises :class:`DiskFullError` naming ``path``; either way
    the temporary file (and any SQLite journal beside it) is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
        tmp.unlink(missing_ok=True)
    except OSError as error:
        if disk_full(error, path.parent):
            raise DiskFullError(path) from error
        raise
    try:
        yield tmp
        tmp.replace(path)
    except DiskFullError:
        raise  # a write nested in this one (a cache filled by the rows being written) named it
    except Exception as error:
        if disk_full(error, path.parent):
            raise DiskFullError(path) from error
        raise
    finally:
        for leftover in (tmp, *tmp.parent.glob(glob.escape(tmp.name) + "-*")):
            leftover.unlink(missing_ok=True)


# A temporary name of atomic_path: .<stem>.<pid>.partial<suffix>, plus GDAL's -journal/-wal.
_PARTIAL = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)\.partial")


def remove_stale_partials(path: Path) -> None:
    """Remove the temporary files of ``path`` that processes no longer running left behind."""
    pattern = glob.escape(f".{path.stem}.") + "*.partial*"
    for candidate in path.parent.glob(pattern):
        found = _PARTIAL.match(candidate.name)
        if found and found["stem"] == path.stem and not _running(int(found["pid"])):
            candidate.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Below this much free space a failed write is taken for a full disk: GDAL, SQLite and torch's
# zip writer report ENOSPC in words of their own ("no such table", "unexpected pos").
FULL_BELOW_BYTES = 1 << 20


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether ``error``, raised while writing into ``folder``, comes from a full disk."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail  # root may use reserved ones
    return blocks * stats.f_frsize < FULL_BELOW_BYTES


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` written atomically to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (indented; NaN and infinities as null, other values JSON lacks as text),
    written atomically: Python writes a bare ``NaN`` that other JSON readers refuse."""
    text = json.dumps(_finite_or_null(data), indent=2, default=str, allow_nan=False)
    return write_bytes(path, (text + "\n").encode())


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float inside it (an undefined figure) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection); OWASP's
# rule is to prefix such a cell with a single quote, which shows it as the text it is.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _runs_as_formula(value: Any) -> bool:
    """Whether a spreadsheet would run this cell as a formula: text starting with a formula
    character that is not simply a signed number."""
    return (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _SIGNED_NUMBER.fullmatch(value)
    )


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula prefixed by ``'``
    (numbers, negative ones included, are left as they are, in a number column or written as
    text: a spreadsheet reads "-3" as the number it is, and a join on such an id keeps working)."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or str(safe[column].dtype) == "string":
            safe[column] = safe[column].map(lambda v: "'" + v if _runs_as_formula(v) else v)
    return safe


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """A data frame as CSV without its index, written atomically, its formula-like text cells
    neutralised (:func:`spreadsheet_safe`)."""
    with atomic_path(path) as tmp:
        spreadsheet_safe(table).to_csv(tmp, index=False)
    return Path(path)


def save_torch(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` written atomically (checkpoints, cached embeddings)."""
    import torch

    # Serialised in memory first: written by Python, a full disk is a plain ENOSPC rather than
    # torch's "enforce fail at inline_container.cc ... unexpected pos".
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def save_npy(array: Any, path: str | os.PathLike) -> Path:
    """A NumPy array in ``.npy`` format, written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return Path(path)


def read_cached_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> Any:
    """The array a cache keeps in ``path``, or None when there is none or it cannot be read (cut
    short, overwritten, not ``.npy``): the caller computes it again and the entry is rewritten."""
    import numpy as np

    if not os.path.exists(path):
        return None
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception:  # numpy's header parser alone raises ValueError, EOFError, TokenError...
        return None


def write_gpkg(
    path: str | os.PathLike,
    layers: Mapping[str, Any],
    *,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """A GeoPackage of ``{layer name: (Geo)DataFrame}`` in that order, written atomically.

    ``finish(tmp)`` runs on the complete file before it is renamed (e.g. to embed styles).
    """
    import pyogrio

    with atomic_path(path) as tmp:
        for index, (name, frame) in enumerate(layers.items()):
            options = {"append": True} if index else {"dataset_options": GPKG_OPTIONS}
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG", **options)
        if finish is not None:
            finish(tmp)
    return Path(path)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder: through links, ``..`` and
    case-insensitive file systems (:func:`os.path.samefile`) when both exist, else by their
    resolved paths."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_foreign_layers(
    path: str | os.PathLike, writes: Collection[str], *, option: str = "the output"
) -> None:
    """Refuse (:class:`InputError`) to replace ``path`` when it exists and holds layers other than
    ``writes``, the layers of the writer about to replace it: a GeoPackage is written whole, so
    they would be lost. An earlier output of the same writer (a re-run) may be replaced."""
    import pyogrio

    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name ending in {path.suffix}")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except pyogrio.errors.DataSourceError:
        raise InputError(
            f"{path} exists and is not a GeoPackage that this command wrote, and writing here "
            f"would delete it; choose another {option}"
        ) from None
    others = [name for name in layers if name not in writes]
    if others:
        raise InputError(
            f"{path} holds layers {', '.join(others)} that writing here would delete; choose "
            f"another {option}"
        )
