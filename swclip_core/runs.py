"""The run folder: what ``swclip train`` writes, and how it is started, seeded and fingerprinted.

A run folder holds

- ``config.json``: every setting (:class:`~swclip_core.config.TrainConfig`), so any result can
  be reproduced from its folder;
- ``train_samples.csv``: the training locations and their captions, the model's default gallery;
- ``checkpoint.pt``: trainable weights, optimiser and schedule, so a run can resume (trained
  objectives), and ``metrics.jsonl``, one line per epoch;
- files of its objective's own (``knn_features.pt`` for image-kNN, ``semivariogram.json/.png``).

Which objective made a run is read from its ``config.json``; building the model from the folder is
that objective's part (:mod:`swclip_core.objectives`), reading and checking the folder is this
module's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .captions import CaptionTemplate, captions_for
from .config import TrainConfig
from .errors import InputError, ModelError
from .io import ProgressFn, file_digest, write_csv

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
TRAIN_SAMPLES = "train_samples.csv"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass
class Run:
    """A started run, what an objective trains from: the folder, the settings, the training
    samples (indexed 0..N-1) and their captions, the device, and the caller's callbacks."""

    dir: Path
    config: TrainConfig
    samples: pd.DataFrame
    captions: list[str]
    device: torch.device
    cache_dir: Path | None = None
    resume: bool = False
    progress: ProgressFn | None = None
    cancel: Callable[[], bool] | None = None

    def image_features(self, network: Any, progress: ProgressFn | None = None) -> torch.Tensor:
        """The frozen image features of the training photos (cached on disk)."""
        from .features import extract_image_features

        return extract_image_features(
            network,
            self.samples["image_path"].tolist(),
            device=self.device,
            cache_dir=self.cache_dir,
            num_workers=self.config.num_workers,
            progress=progress,
            cancel=self.cancel,
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def caption_template(config: TrainConfig) -> CaptionTemplate:
    """The captions a run trains on (and that its galleries must be written in)."""
    return CaptionTemplate(precision=config.caption_precision)


def start_run(
    samples: pd.DataFrame, config: TrainConfig, run_dir: str | Path, *, marker: str, resume: bool
) -> tuple[Path, pd.DataFrame, list[str]]:
    """Create a run folder (refusing to overwrite a finished one unless resuming), save the config
    and the training table with captions, the model's default gallery.

    ``marker`` is the file whose presence means the folder already holds a model. Returns the
    folder, the samples re-indexed from 0 and their captions.
    """
    config.validate()
    if len(samples) < 2:
        raise InputError(f"training needs at least 2 usable samples, got {len(samples)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / marker).exists() and not resume:
        raise InputError(
            f"{run_dir} already holds a trained model; pass --resume to continue it "
            "or choose another output folder"
        )
    config.save(run_dir / CONFIG)
    samples = samples.reset_index(drop=True)
    captions = captions_for(samples, caption_template(config))
    table = pd.DataFrame(samples.drop(columns="geometry", errors="ignore")).assign(caption=captions)
    write_csv(table, run_dir / TRAIN_SAMPLES)
    return run_dir, samples, captions


def read_config(run_dir: str | Path) -> TrainConfig:
    """The settings of a run folder; :class:`ModelError` when it is not one."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ModelError(
            f"{run_dir} is not a trained model folder (no {CONFIG}); train one with `swclip train`"
        )
    return TrainConfig.load(path)


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The saved state of a trained run (weights under ``"model"``), on the CPU."""
    import torch

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise ModelError(
            f"{run_dir} is not a trained model folder (needs {CONFIG} and {CHECKPOINT}); "
            "train one with `swclip train`"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def fingerprint(run_dir: str | Path) -> str:
    """Names the exact weights of a run (its checkpoint's digest), so that cached gallery
    embeddings of one model are never reused by another; empty for a run without weights."""
    path = Path(run_dir) / CHECKPOINT
    return file_digest(path) if path.is_file() else ""


def training_gallery(run_dir: Path) -> pd.DataFrame:
    """The locations and captions a model was trained on (the default, open-set gallery)."""
    path = Path(run_dir) / TRAIN_SAMPLES
    if not path.exists():
        raise InputError(f"{run_dir} has no {TRAIN_SAMPLES}; pass --gallery with a locations file")
    return pd.read_csv(path, dtype={"sample_id": str})
