"""The ``swclip`` command: train, predict, evaluate, gallery, probe, surface, split and demo.

Each command parses its options (:mod:`swclip_core.cli_options`), reads its input
(:mod:`swclip_core.cli_input`), calls the library (:mod:`swclip_core.api`) and prints what
happened. Errors the user can act on are printed as one line (``swclip: error: ...``), never a
traceback, and the exit code says what happened (see ``swclip --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import distributed
from .cli_input import (
    EXIT_OK,
    EXIT_PARTIAL,
    check_options,
    enrich,
    read_input,
    report_joins,
    report_skipped,
    report_skipped_list,
    split_files,
)
from .cli_options import build_parser

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_PARTIAL", "build_parser", "main"]


def chosen_objective(args: argparse.Namespace) -> str:
    """--objective, or the objective that --location-encoder and --loss name (each defaulting
    to the default objective's); InputError when the two ways disagree."""
    from .config import TrainConfig
    from .errors import InputError
    from .objectives.registry import REGISTRY, objective_for

    if args.location_encoder is None and args.loss is None:
        return args.objective or TrainConfig().objective
    default = REGISTRY[TrainConfig().objective]
    name = objective_for(args.location_encoder or default.encoder, args.loss or default.loss)
    if args.objective not in (None, name):
        raise InputError(
            f"--objective {args.objective} disagrees with --location-encoder/--loss, which name "
            f"{name}; give one or the other"
        )
    return name


def training_epochs(args: argparse.Namespace) -> int:
    """--epochs; without it the default, or for --resume the run's own: continuing an interrupted
    run must not lengthen it to the default unasked."""
    from .config import TrainConfig
    from .runs import CONFIG

    if args.epochs is not None:
        return args.epochs
    saved = Path(args.out) / CONFIG
    if args.resume and saved.is_file():
        return TrainConfig.load(saved).epochs
    return TrainConfig().epochs


def evaluation_protocol(args: argparse.Namespace) -> str:
    """--protocol; without it open when a --gallery is given (only that protocol uses one), else
    closed. A --gallery with --protocol closed is refused rather than ignored."""
    from .errors import InputError

    if args.protocol is None:
        return "closed" if args.gallery is None else "open"
    if args.protocol == "closed" and args.gallery is not None:
        raise InputError(
            "--gallery is the open protocol's gallery; the closed protocol scores each photo "
            "against the evaluated photos' own captions. Give --protocol open, or leave out "
            "--gallery"
        )
    return args.protocol


def command_train(args: argparse.Namespace) -> int:
    from .api import train
    from .config import SpatialKernel, TrainConfig

    config = TrainConfig(
        objective=chosen_objective(args),
        hybrid_combine=args.hybrid_combine,
        backbone=args.backbone,
        pretrained=args.pretrained,
        mode=args.mode,
        epochs=training_epochs(args),
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
    if not distributed.is_main():  # under torchrun rank 0 reports for the group
        return EXIT_OK
    if result.already_complete:
        known = math.isfinite(result.final_loss)
        loss = f", final loss {result.final_loss:.4f}" if known else ""
        print(f"{result.run_dir} is already complete ({result.epochs} epochs{loss}); nothing to do")
    elif result.epochs == 0:
        print(
            f"done: indexed {len(samples)} training images ({result.samples_per_s:.0f} images/s); "
            f"{config.objective} model in {result.run_dir}"
        )
    else:
        print(
            f"done: {result.epochs} epochs, final loss {result.final_loss:.4f}, "
            f"{result.samples_per_s:.0f} samples/s; model in {result.run_dir}"
        )
    return report_skipped(samples, args.out, folder=True)


def load_gallery_table(args: argparse.Namespace, config):
    from .galleries import gallery_from_file
    from .runs import caption_template, training_gallery

    if args.gallery in (None, "train"):
        return training_gallery(args.model)
    return gallery_from_file(args.gallery, caption_template(config))


def run_evaluation(args: argparse.Namespace, protocol: str):
    """The samples and their evaluation; under torchrun, the evaluation on rank 0 only (None on
    the others), once every process has extracted its share of the photos' features."""
    from .evaluation import evaluate, extract_feature_shares

    options, gallery_skipped = evaluation_options(args, protocol)
    samples = enrich(read_input(args), args)
    # the gallery's unusable rows are reported with the samples'
    samples.attrs["skipped"] = samples.attrs.get("skipped", []) + gallery_skipped
    if distributed.world_size() > 1:
        extract_feature_shares(samples, **options)
        if not distributed.is_main():
            return samples, None
    return samples, evaluate(samples=samples, **options)


def evaluation_options(args: argparse.Namespace, protocol: str) -> tuple[dict, list[dict]]:
    """Everything :func:`evaluate` needs but the samples: the model, its gallery (built once,
    however many chunks of a layer are then localized against it) and the options; and the
    gallery rows that could not be used (skipped records)."""
    from .api import embed_gallery, load_model
    from .device import resolve_device
    from .errors import InputError, ModelError
    from .fusion import KNN_WEIGHT
    from .io import default_cache_dir
    from .knn_weight import knn_weight_for

    device = distributed.start(resolve_device(args.device))
    model = load_model(args.model, device)
    config, knn = model.config, model.knn
    fuse = getattr(args, "fuse", None)
    if knn is not None and (fuse is not None or args.gallery not in (None, "train")):
        raise InputError(
            f"{args.model} is an image-kNN model: its gallery is its training images, so "
            "--gallery and --fuse do not apply; leave them out"
        )
    cache_dir = args.cache_dir or default_cache_dir()
    # how top-K candidates become a prediction: the localization's and the fusion weight's
    prediction = dict(
        k=args.top_k,
        method=args.method,
        temperature=args.temperature,
        mode_radius_m=args.mode_radius_m,
    )
    knn_weight = getattr(args, "knn_weight", None)
    if fuse is not None:
        fused = load_model(fuse, device)
        if fused.knn is None:
            raise ModelError(
                f"{fuse} is not an image-kNN run; make one with "
                "`swclip train --objective image-knn`"
            )
        knn = fused.knn
        if knn_weight is None and protocol == "open":  # the closed protocol refuses fusion

            def choose() -> float:
                # under torchrun rank 0 chooses (and caches) it alone, training in one process;
                # the others wait, then read the cache
                with distributed.alone():
                    return knn_weight_for(
                        model,
                        fused,
                        cache_dir=cache_dir,
                        knn_temperature=args.knn_temperature,
                        **prediction,
                    )

            knn_weight = distributed.main_first(choose)
    gallery, skipped = None, []
    if protocol == "open" and model.knn is None:
        table = load_gallery_table(args, config)
        skipped = list(table.attrs.get("skipped", []))
        # under torchrun rank 0 embeds (and caches) it, the others read the cache
        gallery = distributed.main_first(
            lambda: embed_gallery(table, model, cache_dir=cache_dir, index=args.index)
        )
    options = dict(
        backbone=model.network,
        config=config,
        device=device,
        protocol=protocol,
        gallery=gallery,
        model_fingerprint=model.fingerprint,
        index=args.index,
        cache_dir=cache_dir,
        progress=args.progress,
        cancel=args.cancel,
        **prediction,
        knn=knn,
        knn_weight=KNN_WEIGHT if knn_weight is None else knn_weight,
        knn_temperature=getattr(args, "knn_temperature", 0.05),
    )
    return options, skipped


WARNING_PREFIX = "swclip: warning: "  # on stderr; the plugin's dock shows such lines


def report_surface(path: Path, *, cell_given: bool = False) -> None:
    """Say where the error surface is, and warn when its automatic cells came out coarser than the
    photos' spacing: photos in areas far apart (towns in two countries) force a grid so coarse,
    within its size limit, that it blurs neighbouring photos together."""
    import rasterio

    print(f"wrote {path} (error_m interpolated between the true locations)")
    with rasterio.open(path) as surface:
        tags, bounds = surface.tags(), surface.bounds
    cell, spacing = float(tags["cell_m"]), float(tags["median_spacing_m"])
    if cell_given or cell <= spacing:
        return
    width, height = (bounds.right - bounds.left) / 1000, (bounds.top - bounds.bottom) / 1000
    print(
        f"{WARNING_PREFIX}the photos spread over {width:,.0f} x {height:,.0f} km with a median "
        f"{spacing:,.0f} m between neighbours: within its size limit the surface has cells of "
        f"{cell:,g} m, coarser than that spacing, so it blurs neighbouring photos together; "
        "make one surface per area (filter the photos by town or region), or choose the cell "
        "size (swclip surface --cell-m; in QGIS, Error surface raster's cell size)",
        file=sys.stderr,
    )


def warn_if_trained_on(seen: int, n: int, model: Path) -> None:
    """Say so when photos being scored trained the model: an analyst who localizes the layer
    the model was trained on would otherwise read its fit as its accuracy."""
    if seen:
        print(
            f"{WARNING_PREFIX}{seen:,} of these {n:,} photos trained the model {model} (the same "
            "images, by content): their errors show how well it fits the photos it was trained "
            "on, not how well it localizes new ones; judge it on photos it has not seen",
            file=sys.stderr,
        )


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
    from .evaluation import localize_in_shares
    from .metrics import error_summary
    from .outputs import render_error_map, write_error_surface, write_prediction_chunks
    from .runs import seen_in_training, training_images

    if args.out.suffix.lower() != ".gpkg":
        raise InputError(f"--out must be a GeoPackage file ending in .gpkg, got {args.out}")
    # Checked before the model runs, so a typo costs nothing.
    if args.error_surface and args.error_surface.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"--error-surface must end in .tif, got {args.error_surface}")
    if args.map and args.map.suffix.lower() != ".png":
        raise InputError(f"--map must end in .png, got {args.map}")
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
    trained = training_images(args.model)  # read once, however many chunks are marked
    seen = []  # per chunk: how many of its photos trained the model (their in_training field)

    def localized():
        for chunk in itertools.chain([first], chunks):
            skipped.extend(chunk.attrs.get("skipped", []))
            if not chunk.empty:
                chunk = enrich(chunk, args, report=False)
                joins.append(chunk.attrs.get("joins", []))
                # under torchrun: localized in shares, the rows on rank 0 (None elsewhere)
                predictions = localize_in_shares(chunk, **options)
                if predictions is not None:
                    predictions["in_training"] = seen_in_training(predictions, trained)
                    seen.append(int(predictions["in_training"].sum()))
                    yield predictions

    if not distributed.is_main():
        for _ in localized():  # its shares went to rank 0, which writes and reports
            pass
        return EXIT_OK
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
    warn_if_trained_on(sum(seen), len(predictions), args.model)
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
        report_surface(write_error_surface(predictions, args.error_surface, crs=out_crs))
    if args.map:
        title = f"swclip predict with {args.model.name}"
        print(f"wrote {render_error_map(predictions, args.map, title=title)}")
    return report_skipped_list(skipped, args.out)


def command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import TABLE1_COLUMNS
    from .io import write_json
    from .outputs import format_table
    from .runs import seen_in_training, training_images

    protocol = evaluation_protocol(args)
    samples, evaluation = run_evaluation(args, protocol)
    if evaluation is None:  # under torchrun, rank 0 reports
        return EXIT_OK
    gallery = {"closed": "the evaluated photos' own captions"}.get(
        protocol, args.gallery or "the training locations"
    )
    print(f"{protocol} protocol: {evaluation.context['gallery_size']:,} candidates, {gallery}")
    print(format_table({evaluation.context["objective"]: evaluation.summary}, TABLE1_COLUMNS))
    seen = int(seen_in_training(samples, training_images(args.model)).sum())
    evaluation.context["photos_seen_in_training"] = seen  # in --json too
    warn_if_trained_on(seen, len(samples), args.model)
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
    from .outputs import format_table
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
        from .api import embed_gallery
        from .io import default_cache_dir

        cache_dir = args.cache_dir or default_cache_dir()
        embed_gallery(table, model, cache_dir=cache_dir, index=args.index)
        print(f"embedded its {len(table)} captions for {args.model} (cached in {cache_dir})")
    return report_skipped(table, args.out)


def command_surface(args: argparse.Namespace) -> int:
    import pandas as pd
    import pyogrio

    from .data.tables import choose_layer
    from .errors import InputError
    from .outputs import POINTS_LAYER, write_error_surface

    if not args.predictions.exists():
        raise InputError(f"{args.predictions} does not exist")
    if args.predictions.suffix.lower() == ".csv":
        table = pd.read_csv(args.predictions)
    else:
        layer = args.layer
        if layer is None:
            with contextlib.suppress(pyogrio.errors.DataSourceError):  # choose_layer says why
                names = [str(name) for name, _ in pyogrio.list_layers(args.predictions)]
                layer = POINTS_LAYER if POINTS_LAYER in names else None
        layer = choose_layer(args.predictions, layer)  # a layer it lacks: the ones it has
        table = pyogrio.read_dataframe(args.predictions, layer=layer, read_geometry=False)
    path = write_error_surface(
        table,
        args.out,
        crs=args.crs,
        cell_m=args.cell_m,
        power=args.power,
        max_distance_m=args.max_distance_m,
    )
    report_surface(path, cell_given=args.cell_m is not None)
    return EXIT_OK


def command_split(args: argparse.Namespace) -> int:
    from .data.splits import random_split, spatial_block_split
    from .io import write_csv

    outputs = split_files(args.out)
    samples = read_input(args)
    if args.by == "random":
        train, test = random_split(len(samples), test_fraction=args.test_share, seed=args.seed)
    else:
        lat, lon = samples["lat"].to_numpy(), samples["lon"].to_numpy()
        train, test = spatial_block_split(
            lat, lon, block_m=args.block_m, test_fraction=args.test_share, seed=args.seed
        )
    table = samples.drop(columns="geometry")
    for name, rows in (("train", train), ("test", test)):
        write_csv(table.iloc[rows], outputs[name])
    how = "at random" if args.by == "random" else f"by {args.block_m:g} m blocks"
    print(
        f"split {len(samples)} photos {how} (seed {args.seed}): {len(train)} in "
        f"{args.out / 'train.csv'}, {len(test)} in {args.out / 'test.csv'}"
    )
    return report_skipped(samples, args.out, folder=True)


# The commands that share their work between the processes torchrun starts.
DISTRIBUTED_COMMANDS = ("train", "predict", "evaluate")
COMMANDS = {
    "train": command_train,
    "predict": command_predict,
    "evaluate": command_evaluate,
    "demo": command_demo,
    "gallery": command_gallery,
    "probe": command_probe,
    "surface": command_surface,
    "split": command_split,
}


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command with its forward passes in its ``--precision``."""
    if distributed.world_size() > 1 and args.command not in DISTRIBUTED_COMMANDS:
        from .errors import InputError

        raise InputError(
            f"swclip {args.command} runs in one process; run it without torchrun "
            f"(torchrun runs {', '.join(DISTRIBUTED_COMMANDS)})"
        )
    check_options(args)  # before any work: outputs that would replace inputs, stray options
    precision = getattr(args, "precision", None)
    if precision is None:  # the default (device.resolve_precision)
        return COMMANDS[args.command](args)
    from .device import precision_scope, resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(args.device))  # refuse fp16 on a CPU up front
    with precision_scope(precision):
        return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swclip`` command; returns the process exit code. Under torchrun
    every process runs it; rank 0 prints the reports (the others only their errors)."""
    args = build_parser().parse_args(argv)
    from .errors import DiskFullError, SwclipError

    quiet: contextlib.AbstractContextManager = contextlib.nullcontext()
    if not distributed.is_main():
        os.environ["TQDM_DISABLE"] = "1"
        quiet = contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            code = run_command(args)
        if code == EXIT_PARTIAL and distributed.world_size() > 1:
            # torchrun takes any exit code but 0 for a failed worker, and restarts the group
            # with --max-restarts: the skipped records are listed, the command did its work.
            return EXIT_OK
        return code
    except SwclipError as error:
        if args.debug:
            raise
        print(f"swclip: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"swclip: {cancel_message(args)}", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            # a full disk outside the writers that name their file
            full = DiskFullError(error.filename or "a temporary file")
            print(f"swclip: error: {full}", file=sys.stderr)
            return full.exit_code
        # a bug: one line, as the exit codes in --help promise, and the way to the traceback
        message = " ".join(str(error).split())
        print(
            f"swclip: error: unexpected failure ({type(error).__name__}: {message}); run again "
            "with --debug for the traceback and report it",
            file=sys.stderr,
        )
        return 1
    finally:
        distributed.stop()


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
