"""The sample reader for a folder of photos positioned by their EXIF GPS."""

from __future__ import annotations

import math
import os
from pathlib import Path

from swclip_core.data.exif import read_exif_gps
from swclip_core.data.records import REASONS_IN_ERROR, TEXT_FIELDS, Records
from swclip_core.errors import InputError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})


def _photo_files(folder: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """The photo files under ``folder`` (links to files and folders followed, each folder read
    once) and, as skipped records, everything photo-like or unreadable that cannot be used:
    broken links, photo names that are not files, unreadable folders, folder links that lead back
    to a folder already read (a loop)."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    seen: dict[tuple[int, int], str] = {}

    def label(path: str) -> str:
        return Path(path).relative_to(folder).as_posix()

    def unreadable(error: OSError) -> None:
        where = label(error.filename) if error.filename else "."
        reason = f"folder cannot be read: {error.strerror}"
        skipped.append({"record": where + "/", "reason": reason})

    for root, dirs, names in os.walk(folder, followlinks=True, onerror=unreadable):
        info = os.stat(root)
        key = (info.st_dev, info.st_ino)
        if key in seen:  # a link back to a folder already read: read it once
            skipped.append(
                {
                    "record": label(root) + "/",
                    "reason": f"a link to {seen[key]}/, already read (a loop or a second link): "
                    "its photos are read once",
                }
            )
            dirs.clear()
            continue
        seen[key] = label(root)
        # os.walk lists folders (and links to folders) in dirs and walks them; names holds the
        # rest, broken links included.
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path) and not os.path.exists(path):
                target = os.readlink(path)
                skipped.append(
                    {"record": label(path), "reason": f"broken link: {target} does not exist"}
                )
            elif Path(name).suffix.lower() not in PHOTO_SUFFIXES:
                continue
            elif os.path.isfile(path):
                files.append(Path(path))
            else:
                skipped.append({"record": label(path), "reason": "a photo name, but not a file"})
    return sorted(files), skipped


def read_photo_folder(folder: Path, require_location: bool = True) -> Records:
    """Records of the photos under ``folder``, positioned by their EXIF GPS; without
    ``require_location`` a photo without a position is kept (NaN) rather than skipped."""
    files, skipped = _photo_files(folder)
    if not files:
        found = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:REASONS_IN_ERROR])
        raise InputError(
            f"No photos (JPEG, PNG or TIFF) found in folder {folder} or its subfolders"
            + (f" ({found})." if found else ".")
        )
    records = Records(skipped=skipped)
    for file in files:
        label = file.relative_to(folder).as_posix()
        try:
            position = read_exif_gps(file)
        except InputError as error:
            records.skipped.append({"record": label, "reason": f"unreadable image: {error}"})
            continue
        if position is None and not require_location:
            position = (math.nan, math.nan)  # to be localized: its position is the question
        if position is None:
            records.skipped.append(
                {"record": label, "reason": f"photo {file} has no GPS position in its EXIF"}
            )
            continue
        records.labels.append(label)
        records.ids.append(file.stem)
        records.images.append(os.path.abspath(file))
        records.lat.append(position[0])
        records.lon.append(position[1])
        for name in TEXT_FIELDS:
            records.text[name].append(None)
    return records
