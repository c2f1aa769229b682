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
