"""`make bench`: throughput of swclip-lite on this machine, written to benchmarks/results.md.

Measures, on the bundled data:
- feature extraction (images/s): decoding + preprocessing in DataLoader workers + the frozen image
  trunk, through the same `extract_image_features` the trainer uses, with the on-disk cache off;
  beside it the trunk's bare forward rate on already-decoded tensors of the same batch size;
- cached-feature training (samples/s) for each objective: the real training loop of `train()` on
  pre-extracted features (text tower forward/backward, losses, optimiser), from metrics.jsonl.
Nothing here is asserted: figures are recorded with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from swclip_core.config import TrainConfig
from swclip_core.data import read_samples
from swclip_core.data.synthetic import demo_places, generate_scenes
from swclip_core.device import resolve_device
from swclip_core.features import extract_image_features
from swclip_core.models import create_backbone
from swclip_core.outputs import write_csv
from swclip_core.train import train

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHOTOS = REPO / "resources" / "sample_data" / "photos"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {resolve_device('auto')}"
    )


@torch.no_grad()
def bare_forward_rate(backbone, batch: torch.Tensor, repeats: int = 5) -> float:
    backbone.eval()
    backbone.image_features(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone.image_features(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


def extraction_rate(backbone, paths: list[str], device, batch_size: int) -> float:
    start = time.perf_counter()
    extract_image_features(
        backbone, paths, device=device, use_cache=False, batch_size=batch_size, num_workers=2
    )
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device("auto")
    work = Path(tempfile.mkdtemp(prefix="swclip-bench-"))
    scenes = generate_scenes(demo_places(n=args.scenes, seed=0), work / "scenes", seed=0)
    samples = read_samples(write_csv(scenes, work / "scenes.csv"))
    photos = read_samples(PHOTOS)
    backbone = create_backbone("swclip-lite", device=device)
    batch_size = 32
    rows = []
    for label, table in (
        ("synthetic scenes 256x192 JPEG", samples),
        ("real photos (29 of 1024x768, 12 panoramas up to 5760x2880)", photos),
    ):
        paths = table["image_path"].tolist()
        extraction_rate(backbone, paths[:batch_size], device, batch_size)  # warm caches/threads
        rate = extraction_rate(backbone, paths, device, batch_size)
        rows.append((label, len(paths), rate))
    dummy = torch.randn(batch_size, 3, 224, 224, device=device)
    bare = bare_forward_rate(backbone, dummy)
    train_rates = {}
    for objective in ("clip", "swclip"):
        config = TrainConfig(objective=objective, epochs=args.epochs, device=str(device))
        run = work / f"run-{objective}"
        train(samples, config, run, cache_dir=work / "cache")
        epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        # first epoch includes allocator warm-up; report the later ones
        train_rates[objective] = statistics.median(e["samples_per_s"] for e in epochs[1:])
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}; machine: {machine()}.",
        "Backbone swclip-lite (EfficientNet-Lite0 + MiniLM-L6), seed 0, batch size 32 for features,"
        f" {TrainConfig().batch_size} for training; data: {args.scenes} synthetic scenes at real"
        " Isle of Man addresses and the 41 bundled real photos. No figure here is asserted by a"
        " test.",
        "",
        "## Feature extraction (frozen image trunk, decoding in 2 DataLoader workers, cache off)",
        "",
        "| data | images | images/s |",
        "| --- | ---: | ---: |",
        *(f"| {label} | {n} | {rate:.1f} |" for label, n, rate in rows),
        f"| bare trunk forward on decoded 224x224 tensors (upper bound) | {batch_size} | "
        f"{bare:.1f} |",
        "",
        f"## Cached-feature training ({args.scenes} synthetic scenes, median over epochs 2..)",
        "",
        "| objective | samples/s |",
        "| --- | ---: |",
        *(f"| {name} | {rate:.1f} |" for name, rate in train_rates.items()),
        "",
    ]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
