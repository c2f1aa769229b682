"""Speed, each figure beside its limit or its peer, measured side by side in one run.

`python -m benchmarks.speed --work DIR` (`make bench-speed`) measures the Speed section alone and
rewrites it in results.md and results.json; `make bench` runs it as one of its sections. Every
finished part is kept in DIR/speed.json, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from swclip_core.api import train
from swclip_core.captions import CaptionTemplate, captions_for
from swclip_core.config import TrainConfig
from swclip_core.device import autocast, precision_scope, resolve_device, resolve_precision
from swclip_core.features import decode_workers, extract_image_features
from swclip_core.io import atomic_path, write_json
from swclip_core.models import create_backbone
from swclip_core.retrieval import embed_captions, top_k

from . import datasets
from .speed_report import PRECISIONS, replace_section, summarise_speed

HERE = Path(__file__).resolve().parent

PAGE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.extra = self.peak - self.base


def round_times(fns, rounds: int) -> list[list[float]]:
    """Seconds of every call of each function, called in turns (the order rotating every round)
    after one warm-up call each, so that all of them see the same machine state rather than the
    first one paying for what ran before it: on a shared machine the load moves within seconds."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(rounds):
        for i in range(len(fns)):
            turn = (round_ + i) % len(fns)
            start = time.perf_counter()
            fns[turn]()
            times[turn].append(time.perf_counter() - start)
    return times


def median_times(*fns, repeats: int = 5) -> list[float]:
    """Median seconds per call of each function, timed in turns (:func:`round_times`)."""
    return [statistics.median(t) for t in round_times(fns, repeats)]


def median_time(fn, repeats: int = 5) -> float:
    return median_times(fn, repeats=repeats)[0]


def in_precision(precision: str, fn):
    """``fn`` run with its forward passes in ``precision`` (swclip_core.device.autocast)."""

    def run():
        with precision_scope(precision), torch.no_grad():
            return fn()

    return run


def feature_extraction(paths: list[str], rounds: int = 5, batch_size: int = 32) -> dict:
    """Per precision: the pipeline's rate (decode + trunk, default workers, no cache) against the
    trunk's bare forward rate on as many random images in the same batches, the two alternating
    in rounds; the ratio is taken within each round (median and range over rounds).

    Decoding alone (one thread, as the pipeline decodes) is timed in the same rounds: while the
    forward pass keeps every core busy, decoding's CPU time comes on top of it whatever overlaps,
    so the ratio cannot exceed bare / (bare + decode / cores), the ``ceiling`` reported."""
    from swclip_core.data.tensors import ImageDataset, split_preprocess

    device = resolve_device("auto")
    backbone = create_backbone("swclip-lite", device=device).eval()
    pixels = torch.randn(batch_size, 3, 224, 224, device=device)
    sizes = [min(batch_size, len(paths) - i) for i in range(0, len(paths), batch_size)]
    decoded = ImageDataset(list(paths), split_preprocess(backbone.preprocess).on_cpu)

    def decode():
        for i in range(len(decoded)):
            decoded[i]

    def pipeline():
        extract_image_features(
            backbone, paths, device=device, use_cache=False, batch_size=batch_size
        )

    def bare():
        for size in sizes:
            with autocast(device):
                backbone.image_features(pixels[:size])

    fns = [in_precision(p, fn) for p in PRECISIONS for fn in (pipeline, bare)] + [decode]
    times = round_times(fns, rounds)
    decoding, cores = times[-1], torch.get_num_threads()
    rows = {}
    for i, precision in enumerate(PRECISIONS):
        piped, bared = times[2 * i], times[2 * i + 1]
        ratios = [b / p for p, b in zip(piped, bared, strict=True)]
        ceilings = [b / (b + d / cores) for b, d in zip(bared, decoding, strict=True)]
        rows[precision] = {
            "images": len(paths),
            "pipeline_images_per_s": len(paths) / statistics.median(piped),
            "bare_forward_images_per_s": len(paths) / statistics.median(bared),
            "decode_images_per_s": len(paths) / statistics.median(decoding),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ceiling": statistics.median(ceilings),
            "cores": cores,
            "rounds": rounds,
            "decode_workers": decode_workers(device),
        }
    return rows


def training_throughput(
    samples, work: Path, objectives: tuple[str, ...], rounds: int = 2, epochs: int = 2
) -> dict:
    """Samples/s of the real training loop (cached features) per objective and precision: in
    each round every (objective, precision) trains ``epochs`` epochs, the last one timed; median
    and range over rounds. Run folders are kept, so a resumed bench reuses finished ones."""
    cells = [(o, p) for o in objectives for p in PRECISIONS]
    rates: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    for round_ in range(rounds):
        for i in range(len(cells)):
            objective, precision = cells[(round_ + i) % len(cells)]
            run = work / f"speed-{objective}-{precision}-r{round_}"
            if not (run / "checkpoint.pt").exists():
                config = TrainConfig(objective=objective, epochs=epochs, precision=precision)
                train(samples, config, run, cache_dir=work / "cache")
            last = (run / "metrics.jsonl").read_text().splitlines()[-1]
            rates[objective, precision].append(json.loads(last)["samples_per_s"])
    return {
        objective: {
            precision: {
                "samples_per_s": statistics.median(rates[objective, precision]),
                "min": min(rates[objective, precision]),
                "max": max(rates[objective, precision]),
            }
            for precision in PRECISIONS
        }
        for objective in objectives
    }


def gallery_embedding(captions: list[str], rounds: int = 3) -> dict:
    """Captions embedded per second (swclip-lite text tower, batches of 256) per precision."""
    device = resolve_device("auto")
    backbone = create_backbone("swclip-lite", device=device).eval()
    fns = [
        in_precision(p, lambda: embed_captions(backbone, captions, device=device))
        for p in PRECISIONS
    ]
    times = round_times(fns, rounds)
    return {
        precision: {
            "captions": len(captions),
            "captions_per_s": len(captions) / statistics.median(t),
            "min": len(captions) / max(t),
            "max": len(captions) / min(t),
        }
        for precision, t in zip(PRECISIONS, times, strict=True)
    }


def retrieval_row(q: torch.Tensor, gallery: torch.Tensor, k: int, faiss, repeats: int = 7) -> dict:
    """One gallery size: our search, the bare one-shot search, faiss; time and memory."""
    queries, dim = q.shape

    def ours():
        return top_k(q, gallery, k)

    def bare():
        return torch.topk(q @ gallery.T, k, dim=1)

    ours_s, matmul_s = median_times(ours, bare, repeats=repeats)
    seconds = {"ours": ours_s, "matmul": matmul_s}
    if faiss is not None:
        # Timed on its own: after a search faiss's OpenMP threads keep spinning for a while and,
        # on 2 cores, slowed whichever search ran next by 20-40 %.
        index = faiss.IndexFlatIP(dim)
        index.add(gallery.numpy())
        qn = q.numpy()
        seconds["faiss"] = median_time(lambda: index.search(qn, k), repeats)
    with PeakRss() as ours_mem:
        ours()
    with PeakRss() as bare_mem:
        bare()
    row = {
        "gallery": len(gallery),
        "queries": queries,
        "dim": dim,
        **{f"{name}_ms_per_query": 1000 * s / queries for name, s in seconds.items()},
        "ours_extra_rss_mb": ours_mem.extra / 2**20,
        "matmul_extra_rss_mb": bare_mem.extra / 2**20,
        "gallery_mb": gallery.numel() * 4 / 2**20,
    }
    row["ours_vs_best_bare"] = row["ours_ms_per_query"] / min(
        row["matmul_ms_per_query"], row.get("faiss_ms_per_query", float("inf"))
    )
    return row


def retrieval(
    sizes=(10**3, 10**4, 10**5, 10**6),
    dim: int = 256,
    queries: int = 64,
    k: int = 5,
    batch: int | None = 1024,
) -> list[dict]:
    """swclip's blocked top-K against a bare one-shot matmul + topk and faiss IndexFlatIP, then
    (``batch``) a whole layer's worth of queries against the largest gallery, where the memory
    bound shows: time and peak memory of ours and the bare matmul, faiss left out for its time."""
    try:
        import faiss
    except ImportError:  # faiss is a dev requirement; the table shows NaN when it is absent
        faiss = None
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(queries, dim, generator=gen), dim=1)
    rows = []
    for size in sizes:
        gallery = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
        rows.append(retrieval_row(q, gallery, k, faiss))
    if batch and sizes:
        many = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
        rows.append(retrieval_row(many, gallery, k, None, repeats=2))
    return rows


def vit_flops(config) -> float:
    """Floating-point operations of one ViT image forward (2 per multiply-add) from its
    configuration: the patch embedding, and per layer the q/k/v and output projections, the
    attention's two token-by-token products and the MLP (norms and softmax are negligible)."""
    width, hidden = config.hidden_size, config.intermediate_size
    patches = (config.image_size // config.patch_size) ** 2
    tokens = patches + 1  # and the class token
    embedding = patches * 3 * config.patch_size**2 * width
    layer = 4 * tokens * width**2 + 2 * tokens**2 * width + 2 * tokens * width * hidden
    return 2.0 * (embedding + config.num_hidden_layers * layer)


def matmul_gflops(rows: int, width: int, hidden: int, rounds: int = 5) -> dict[str, float]:
    """This CPU's matmul rate (GFLOP/s, median of rounds) at a ViT MLP's shape, (rows, width) @
    (width, hidden), per precision: the ceiling of any ViT forward's speed here."""
    rates = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(rows, width, dtype=dtype), torch.randn(width, hidden, dtype=dtype)
        seconds = median_time(lambda a=a, b=b: a @ b, rounds)
        rates[precision] = 2.0 * rows * width * hidden / seconds / 1e9
    return rates


def geoclip_localization(image_paths: list[str], rounds: int = 2, batch_size: int = 8) -> dict:
    """Per-image localization on GeoCLIP's own 100K gallery, in the setting of an analyst who
    localizes a layer of photos: the official ``predict`` (one image per call, which encodes the
    whole gallery every time) against the same encoders with the gallery encoded once and the
    layer's images decoded at the model's input size and encoded in batches, per precision; and
    swclip-lite's image encoder the same way. Seconds per image = a layer's time / its images.

    GeoCLIP's CLIP ViT-L/14 weights come from a model hub, which this machine cannot reach; the
    official class is therefore built with its exact architecture and random CLIP weights
    (``clip_pretrained=False``), which costs the same time. Its location encoder, image MLP and
    gallery are the official ones shipped in the geoclip package.
    """
    from geoclip import GeoCLIP

    from swclip_core.data import load_image

    torch.manual_seed(0)
    official = GeoCLIP(from_pretrained=True, clip_pretrained=False).eval()
    lite = create_backbone("swclip-lite").eval()
    n = len(image_paths)
    with torch.no_grad():
        # one timed call after a warm-up: it takes 20+ s, and the speed-up is what is reported
        official_s = median_time(lambda: official.predict(image_paths[0], top_k=5), 1)
        start = time.perf_counter()
        gallery = F.normalize(official.location_encoder(official.gps_gallery), dim=1)
        encode_once_s = time.perf_counter() - start
    lite_gallery = F.normalize(torch.randn(len(gallery), lite.embed_dim), dim=1)

    def same_encoders():
        for i in range(0, n, batch_size):
            images = [load_image(p, min_side=224) for p in image_paths[i : i + batch_size]]
            pixels = official.image_encoder.preprocess_image(images)
            with autocast(torch.device("cpu")):
                query = official.image_encoder(pixels).float()
            top_k(F.normalize(query, dim=1), gallery, 5)

    def swclip_lite():
        for i in range(0, n, batch_size):
            pixels = torch.stack(
                [
                    lite.preprocess(load_image(p, min_side=256))
                    for p in image_paths[i : i + batch_size]
                ]
            )
            with autocast(torch.device("cpu")):
                query = lite.encode_image(pixels).float()
            top_k(F.normalize(query, dim=1), lite_gallery, 5)

    fns = [in_precision(p, fn) for fn in (same_encoders, swclip_lite) for p in PRECISIONS]
    times = round_times(fns, rounds)
    per_image = [statistics.median(t) / n for t in times]
    result = {
        "gallery": len(gallery),
        "images": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "auto": resolve_precision("auto", torch.device("cpu")),
        "official_predict_s": official_s,
        "gallery_encoding_once_s": encode_once_s,
    }
    # The bound: no pipeline with these encoders beats the ViT forward at the CPU's matmul rate.
    vision = official.image_encoder.CLIP.config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    rates = matmul_gflops(batch_size * tokens, vision.hidden_size, vision.intermediate_size)
    flops = vit_flops(vision)
    result.update(
        vit_gflop_per_image=flops / 1e9,
        matmul_gflops=rates,
        bound_s_per_image=flops / 1e9 / max(rates.values()),
        bound_speedup=official_s / (flops / 1e9 / max(rates.values())),
    )
    for i, name in enumerate(("same_encoders", "swclip_lite")):
        for j, precision in enumerate(PRECISIONS):
            seconds = per_image[i * len(PRECISIONS) + j]
            result[f"{name}_{precision}_s"] = seconds
            result[f"{name}_{precision}_speedup"] = official_s / seconds
    return result


def measure_all(work: Path, scenes, photo_paths: list[str], quick: bool = False) -> dict:
    """Every speed figure; each finished part is kept in ``work/speed.json`` and not measured
    again, so an interrupted run continues where it stopped."""
    store = work / "speed.json"
    result = json.loads(store.read_text()) if store.exists() else {}
    scene_paths = scenes["image_path"].tolist()
    captions = captions_for(scenes, CaptionTemplate())
    parts = {
        "feature_extraction": lambda: {
            "generated scenes 256x192": feature_extraction(scene_paths[:96]),
            "real photos (incl. 5760x2880 panoramas)": feature_extraction(photo_paths),
        },
        # the caption objectives share one encoder path (clip, semivariogram run like swclip)
        "training": lambda: training_throughput(scenes, work, ("swclip", "geoclip")),
        "gallery_embedding": lambda: gallery_embedding(captions * 2),
        "retrieval": lambda: retrieval(
            sizes=(10**3, 10**4) if quick else (10**3, 10**4, 10**5, 10**6),
            batch=256 if quick else 1024,
        ),
    }
    if not quick:
        # 16 photos: a small layer; ViT-L/14 costs about 0.75 s an image on this CPU in float32
        parts["geoclip"] = lambda: geoclip_localization(photo_paths[:16])
    for name, measure in parts.items():
        if name not in result:
            load = os.getloadavg()[0]
            result[name] = measure()
            result.setdefault("load", {})[name] = [load, os.getloadavg()[0]]
            result["date"] = time.strftime("%Y-%m-%d")  # of the last part measured
            write_json(store, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--work", type=Path, required=True, help="scratch folder; keep it to resume"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where results.md/json are")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    scenes = datasets.generated_scenes(
        datasets.SAMPLE_DATA / "places" / "isleofman_addresses.csv",
        "isle-of-man",
        args.work,
        n=150 if args.quick else 400,
        epochs=12,
        country="Isle of Man",
        min_per_street=3,
    ).samples
    photo_paths = datasets.photos(epochs=1).samples["image_path"].tolist()
    result = measure_all(args.work, scenes, photo_paths, quick=args.quick)
    json_path, md_path = args.out / "results.json", args.out / "results.md"
    payload = json.loads(json_path.read_text()) if json_path.exists() else {}
    payload["speed"] = result
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")  # as benchmarks.run writes it
    markdown = md_path.read_text() if md_path.exists() else "# SW-CLIP benchmarks\n"
    with atomic_path(md_path) as tmp:
        tmp.write_text(replace_section(markdown, "Speed", summarise_speed(result)))
    print(f"wrote the Speed section of {md_path} and {json_path}")


if __name__ == "__main__":
    main()
