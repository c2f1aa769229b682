"""`make bench-gpu`: the GPU path run end to end, float32 against `--precision auto`.

On a machine with CUDA: trains SW-CLIP on the bundled photos in finetune mode (the image trunk
trains, images decoded every epoch) and in cached mode for a few epochs, once in float32 and once
in the precision ``auto`` picks there (float16 autocast, bfloat16 where the GPU has it), then
localizes the photos against the training locations, and prints samples/s, images/s, peak GPU
memory and the speed-up over float32. Without CUDA it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from swclip_core.api import load_trained, train
from swclip_core.config import TrainConfig
from swclip_core.data import read_samples
from swclip_core.device import precision_scope, resolve_precision
from swclip_core.evaluation import evaluate
from swclip_core.runs import training_gallery

from .datasets import SAMPLE_DATA

MODES = ("finetune", "cached")


def training_rate(run: Path) -> float:
    """Median samples/s of the epochs after the first (which pays for warm-up)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(x["samples_per_s"] for x in lines[1:] or lines)


def peak_mb(device: torch.device) -> float:
    """Peak GPU memory (MB) since the last reset; NaN on a CPU (`--device cpu` tries the script)."""
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def measure(samples, mode: str, precision: str, work: Path, epochs: int, device) -> dict:
    """Train and localize once; samples/s, images/s and peak GPU memory of the two."""
    run = work / f"{mode}-{precision}"
    reset_peak(device)
    config = TrainConfig(
        mode=mode, epochs=epochs, batch_size=16, device=str(device), precision=precision
    )
    train(samples, config, run, cache_dir=work / f"cache-{precision}")
    train_peak = peak_mb(device)
    backbone, config = load_trained(run, device)
    reset_peak(device)
    with precision_scope(precision):
        start = time.perf_counter()
        evaluate(
            backbone,
            config,
            samples,
            device=device,
            protocol="open",
            gallery_table=training_gallery(run),
            cache_dir=work / f"localize-{mode}-{precision}",  # empty: every image is encoded
        )
        seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "precision": precision,
        "train_samples_per_s": training_rate(run),
        "train_peak_mb": train_peak,
        "localize_images_per_s": len(samples) / seconds,  # evaluate() returns CPU tensors: done
        "localize_peak_mb": peak_mb(device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cpu tries the script without a GPU")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench-gpu: no CUDA GPU on this machine, nothing to measure (CPU: make bench)")
        return 0
    device = torch.device(args.device)
    auto = resolve_precision("auto", device)
    samples = read_samples(SAMPLE_DATA / "photos")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; auto precision here: {auto}; {len(samples)} bundled photos, "
          f"{args.epochs} epochs, batch 16")  # fmt: skip
    print("mode | precision | train samples/s | x fp32 | localize images/s | x fp32 | "
          "peak MB train/localize")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="swclip-bench-gpu-") as work:
        for mode in MODES:
            rows = [
                measure(samples, mode, p, Path(work), args.epochs, device) for p in ("fp32", auto)
            ]
            for row in rows:
                print(
                    f"{mode} | {row['precision']} | {row['train_samples_per_s']:.1f} | "
                    f"{row['train_samples_per_s'] / rows[0]['train_samples_per_s']:.2f} | "
                    f"{row['localize_images_per_s']:.1f} | "
                    f"{row['localize_images_per_s'] / rows[0]['localize_images_per_s']:.2f} | "
                    f"{row['train_peak_mb']:.0f}/{row['localize_peak_mb']:.0f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
