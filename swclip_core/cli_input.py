"""What a command does with its input before and after the work: read it as the options say
(:func:`read_input`), fill fields from the spatial joins the options ask for (:func:`enrich`), and
report the records it skipped, with the exit code that says so (:func:`report_skipped`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 4  # finished, but some input records were skipped (listed next to the output)


def read_input(args: argparse.Namespace, chunk_rows: int | None = None):
    """The input samples; with ``chunk_rows`` an iterator of chunks of that many records."""
    from .data.samples import read_sample_chunks

    chunks = read_sample_chunks(
        args.input,
        chunk_rows=chunk_rows,
        layer=args.layer,
        image_column=args.image_column,
        lat_column=args.lat_column,
        lon_column=args.lon_column,
        x_column=args.x_column,
        y_column=args.y_column,
        crs=args.crs,
        id_column=args.id_column,
        street_column=args.street_column,
        city_column=args.city_column,
        country_column=args.country_column,
        region_column=args.region_column,
        patch_size=args.patch_size,
        patch_stride=args.patch_stride,
        patch_count=args.patch_count,
        patch_seed=args.patch_seed,
        bands=args.bands,
        cache_dir=getattr(args, "cache_dir", None),  # raster patches are cached there too
        # predict localizes photos whose position may be unknown; the others need the truth
        require_location=args.command != "predict",
    )
    if chunk_rows is not None:
        return chunks
    (samples,) = chunks
    return samples


def enrich(samples, args: argparse.Namespace, *, report: bool = True):
    """Apply the spatial joins the options ask for (:func:`swclip_core.api.apply_joins`); print
    how many records each one filled (unless not ``report``: a chunk of a layer, whose joins are
    reported for the whole)."""
    from .api import Joins, apply_joins
    from .errors import InputError

    for option, needs in (
        ("regions_layer", "regions"),
        ("region_field", "regions"),
        ("streets_layer", "streets"),
        ("street_field", "streets"),
    ):
        if getattr(args, option, None) is not None and getattr(args, needs, None) is None:
            raise InputError(
                f"--{option.replace('_', '-')} applies to --{needs}; give --{needs} LAYER too"
            )
    # The options are named as Joins' fields; a command without some of them keeps the defaults.
    given = {f.name: getattr(args, f.name, None) for f in fields(Joins)}
    joins = Joins(**{name: value for name, value in given.items() if value is not None})
    before = len(samples.attrs.get("joins", []))
    samples = apply_joins(samples, joins)
    if report:
        report_joins(samples.attrs.get("joins", [])[before:], len(samples))
    return samples


def report_joins(entries: list[dict], records: int) -> None:
    for entry in entries:
        source = entry["layer"] + (f" (field {entry['name_field']})" if entry["name_field"] else "")
        print(
            f"{entry['field']}: filled {entry['filled']} of {records} records from {source}; "
            f"{entry['already_set']} already had one, {entry['unmatched']} matched nothing"
        )


def report_skipped(samples, output: Path | None, *, folder: bool = False) -> int:
    """Print the skipped records and list them next to ``output`` (the command's output file, or
    its output ``folder``), removing a stale list there when none was skipped; the exit code that
    reflects them. Without an output they are printed only."""
    return report_skipped_list(samples.attrs.get("skipped", []), output, folder=folder)


def report_skipped_list(skipped: list[dict], output: Path | None, *, folder: bool = False) -> int:
    """:func:`report_skipped` of a list of skipped records."""
    from .outputs import write_skipped

    path = write_skipped(skipped, output, folder=folder) if output is not None else None
    if not skipped:
        return EXIT_OK
    where = f"; the list with reasons is in {path}:" if path is not None else ":"
    print(f"skipped {len(skipped)} record(s){where}", file=sys.stderr)
    for item in skipped[:10]:
        print(f"  {item['record']}: {item['reason']}", file=sys.stderr)
    if len(skipped) > 10:
        print(f"  ... and {len(skipped) - 10} more", file=sys.stderr)
    return EXIT_PARTIAL


# The options that name what a command reads, as its messages call them; the positional input is
# ``input`` (``predictions`` for surface).
INPUT_OPTIONS = {
    "input": "the input",
    "predictions": "the input",
    "from_input": "--from-input",
    "points": "--points",
    "lines": "--lines",
    "grid": "--grid",
    "gallery": "--gallery",
    "regions": "--regions",
    "streets": "--streets",
    "pretrained": "--pretrained",
    "model": "--model",
    "fuse": "--fuse",
}
RUN_OPTIONS = ("--model", "--fuse")  # run folders: their files are the model


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, what the options ask for but the command would not do: an output
    that replaces one of the command's inputs or a layer it does not write itself, the fusion
    options without --fuse."""
    from .config import KNN_TEMPERATURE
    from .errors import InputError

    fusion = {
        "--knn-weight": getattr(args, "knn_weight", None) is not None,
        "--knn-temperature": getattr(args, "knn_temperature", KNN_TEMPERATURE) != KNN_TEMPERATURE,
    }
    for option, given in fusion.items():
        if given and getattr(args, "fuse", None) is None:  # it would be ignored silently
            raise InputError(
                f"{option} applies to the fusion with an image-kNN run; give --fuse KNN_RUN too, "
                f"or leave {option} out"
            )
    check_outputs(args)


def check_outputs(args: argparse.Namespace) -> None:
    """:class:`InputError` when an output of the command is one of its inputs (or a file an input
    folder holds that it reads), or a GeoPackage holding layers the command does not write: the
    command would replace the file whole, and the input or those layers would be lost."""
    from .io import refuse_foreign_layers

    inputs = [
        (label, Path(value))
        for name, label in INPUT_OPTIONS.items()
        if (value := getattr(args, name, None)) is not None
        and not (name == "gallery" and value == "train")
        and Path(value).exists()
    ]
    for option, output, layers in command_outputs(args):
        for label, source in inputs:
            refuse_reading(option, output, label, source)
        if layers is not None:
            refuse_foreign_layers(output, layers, option=option)


def command_outputs(args: argparse.Namespace) -> list[tuple[str, Path, tuple[str, ...] | None]]:
    """``(option, path, layers)`` of what the command writes: the layers of a GeoPackage it
    replaces, None for another kind of file (or a folder); the list of skipped records beside an
    output file is one of them."""
    from .outputs import skipped_path

    outputs: list[tuple[str, Path, tuple[str, ...] | None]] = []
    if args.command == "predict":
        from .outputs import PREDICTION_LAYERS

        outputs.append(("--out", args.out, PREDICTION_LAYERS))
        outputs += [
            (f"--{n.replace('_', '-')}", getattr(args, n), None) for n in ("error_surface", "map")
        ]
    elif args.command == "gallery":
        from .galleries import GALLERY_LAYER

        outputs.append(("--out", args.out, (GALLERY_LAYER,)))
    elif args.command in ("evaluate", "probe"):
        outputs.append(("--json", args.json, None))
    elif args.command == "split":  # the folder and the files in it (train.csv may be the input)
        files = [("--out", path, None) for path in split_files(args.out).values()]
        return [("--out", Path(args.out), None), *files]
    else:  # train and demo write a folder, surface a GeoTIFF
        return [("--out", Path(args.out), None)]
    listed = [(f"{o} (its skipped list)", skipped_path(p), None) for o, p, _ in outputs[:1] if p]
    return [(o, Path(p), layers) for o, p, layers in outputs + listed if p is not None]


def split_files(out: Path) -> dict[str, Path]:
    """The files ``swclip split`` writes in its ``--out`` folder, by part."""
    return {part: Path(out) / f"{part}.csv" for part in ("train", "test")}


def refuse_reading(option: str, output: Path, label: str, source: Path) -> None:
    """:class:`InputError` when ``output`` is ``source`` (which the command reads for ``label``)
    or a file of the folder ``source`` that it reads: a run folder's own files, a photo folder's
    photos."""
    from .data.photo_folders import PHOTO_SUFFIXES
    from .errors import InputError
    from .io import same_path
    from .runs import CHECKPOINT, CONFIG, METRICS, TRAIN_SAMPLES

    noun = "folder" if source.is_dir() else "file"
    if same_path(output, source):
        raise InputError(
            f"{option} {output} is the same {noun} as {label} {source}: writing there would "
            f"destroy that input; choose another {option.split()[0]}"
        )
    if not (source.is_dir() and output.is_file()):
        return
    inside = output.resolve().parent
    if label in RUN_OPTIONS:
        read = inside == source.resolve() and output.name in (
            CONFIG,
            CHECKPOINT,
            METRICS,
            TRAIN_SAMPLES,
        )
    else:
        read = inside.is_relative_to(source.resolve()) and output.suffix.lower() in PHOTO_SUFFIXES
    if read:
        raise InputError(
            f"{option} {output} is a file of {label} {source} that this command reads: writing "
            f"there would destroy it; choose another {option.split()[0]}"
        )
