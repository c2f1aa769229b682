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

import hashlib
import os
import pickle
import random
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import distributed
from .captions import CaptionTemplate, captions_for
from .config import TrainConfig
from .data.samples import SAMPLE_COLUMNS
from .errors import InputError, ModelError
from .io import ProgressFn, file_digest, write_csv

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
TRAIN_SAMPLES = "train_samples.csv"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng")  # what a checkpoint resumes


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
        """The frozen image features of the training photos (cached on disk). Under torchrun
        each process first extracts its share of the distinct images into the cache; once all
        are done, every process reads the whole set from it (a process whose node does not share
        the cache folder computes what it lacks)."""
        from .features import extract_image_features, extract_shares

        paths = self.samples["image_path"].tolist()
        options = dict(
            device=self.device,
            cache_dir=self.cache_dir,
            num_workers=self.config.num_workers,
            progress=progress,
            cancel=self.cancel,
        )
        extract_shares(network, paths, **options)
        return extract_image_features(network, paths, **options)


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
) -> tuple[Path, pd.DataFrame, list[str], TrainConfig]:
    """Create a run folder (refusing to overwrite a finished one unless resuming), save the config
    and the training table with captions, the model's default gallery. Under torchrun every
    process checks the same things, and only the main one writes.

    ``marker`` is the file whose presence means the folder already holds a model. Resuming
    needs the run's own input and settings (:func:`resumable_config`). Returns the folder, the
    samples re-indexed from 0, their captions and the config as saved.
    """
    config.validate()
    if len(samples) < 2:
        raise InputError(f"training needs at least 2 usable samples, got {len(samples)}")
    run_dir = Path(run_dir)
    samples = samples.reset_index(drop=True)
    config = replace(config, input_digest=samples_digest(samples))
    if resume:
        config = resumable_config(run_dir, config)
    elif (run_dir / marker).exists():
        raise InputError(
            f"{run_dir} already holds a trained model; pass --resume to continue it "
            "or choose another output folder"
        )
    captions = captions_for(samples, caption_template(config))
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG)
        table = pd.DataFrame(samples.drop(columns="geometry", errors="ignore"))
        write_csv(table.assign(caption=captions), run_dir / TRAIN_SAMPLES)
    return run_dir, samples, captions, config


# Settings a resumed run may change: how long it trains (only ever longer) and where and in
# which arithmetic it runs, on how many processes (the global batch, batch_size, stays).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "device", "precision", "num_workers", *distributed.PROCESS_FIELDS}
)


def resumable_config(run_dir: Path, config: TrainConfig) -> TrainConfig:
    """``config`` for continuing the run in ``run_dir``: its input and settings must be the run's
    own (:class:`InputError` names what differs); its epochs are never fewer than the run's."""
    if not (run_dir / CONFIG).is_file():
        raise InputError(
            f"--resume: {run_dir} holds no {CONFIG}, so there is no run to continue; leave out "
            "--resume to start a new one"
        )
    saved = TrainConfig.load(run_dir / CONFIG)
    ours, theirs = _flat(config.to_dict()), _flat(saved.to_dict())
    differ = [key for key in ours if key not in RESUMABLE_CHANGES and ours[key] != theirs.get(key)]
    if differ:
        shown = [
            "the input samples (their content digest differs)"
            if key == "input_digest"
            else f"{key} {ours[key]!r} (the run has {theirs.get(key)!r})"
            for key in differ
        ]
        raise InputError(
            f"cannot resume {run_dir}: it was trained with other input or settings: "
            f"{'; '.join(shown)}. Resume with the run's own, or start a new run in another folder"
        )
    return replace(config, epochs=max(config.epochs, saved.epochs))


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def samples_digest(samples: pd.DataFrame) -> str:
    """SHA-1 of what a run learns from: each sample's id, coordinates, labels and image content
    (not where the files are), in order."""
    digest = hashlib.sha1(usedforsecurity=False)
    columns = [c for c in SAMPLE_COLUMNS if c not in ("image_path", "geometry") and c in samples]
    digest.update(samples[columns].to_csv(index=False).encode())
    images = {path: file_digest(path) for path in dict.fromkeys(samples["image_path"])}
    for path in samples["image_path"]:
        digest.update(images[path].encode())
    return digest.hexdigest()


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
    return load_checkpoint(Path(run_dir) / CHECKPOINT)


def load_checkpoint(path: Path, needs: tuple[str, ...] = ("model",)) -> dict:
    """A checkpoint this toolkit wrote, holding at least the keys ``needs``, loaded safely
    (weights only: no Python object is ever unpickled). :class:`ModelError` names the file and
    what is wrong when it is missing, truncated, not a checkpoint or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; train the model again with `swclip train`")
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of foreign files
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        first = str(error).split(". ")[0].splitlines()[0] if str(error) else type(error).__name__
        reason = "it is empty" if path.stat().st_size == 0 else first
        raise ModelError(
            f"{path} is truncated or not a checkpoint ({reason}); train the model again"
        ) from None
    except Exception as error:
        # Foreign bytes drive torch's unpickler into whatever its stack machine hits: an
        # UnpicklingError, but also an IndexError or KeyError from its own lists and memo.
        found = isinstance(error, pickle.UnpicklingError) and re.search(
            r"unsupported GLOBAL (\S+)", str(error)
        )
        if found:
            raise ModelError(
                f"{path} was refused: it holds Python code or objects ({found.group(1)}), not "
                "only weights, and loading it could run that code; use a checkpoint written by "
                "`swclip train`"
            ) from None
        raise ModelError(f"{path} is not a checkpoint (unreadable data); train again") from None
    missing = [key for key in needs if not isinstance(state, dict) or key not in state]
    if missing:
        raise ModelError(
            f"{path} is not a checkpoint of this toolkit (no {missing[0]!r} entry); train the "
            "model again"
        )
    weights = state.get("model", {})
    if not isinstance(weights, dict) or not all(
        isinstance(w, torch.Tensor) for w in weights.values()
    ):
        raise ModelError(f"{path} holds no weights under 'model'; train the model again")
    return state


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


def _file_key(path: str) -> str:
    """One spelling per file path (absolute, case-folded where the OS ignores case)."""
    return os.path.normcase(os.path.abspath(os.path.expanduser(path)))


def training_images(run_dir: Path) -> frozenset[str]:
    """The image files that trained the model in ``run_dir``, as ``train_samples.csv`` lists them
    (in one spelling each); empty for a model folder that does not list its photos."""
    try:
        trained = pd.read_csv(Path(run_dir) / TRAIN_SAMPLES, usecols=["image_path"], dtype=str)
    except (OSError, ValueError):  # absent, unreadable, or no image_path column
        return frozenset()
    return frozenset(_file_key(p) for p in trained["image_path"].dropna())


def seen_in_training(samples: pd.DataFrame, trained: frozenset[str]) -> np.ndarray:
    """Which of ``samples``' photos are among ``trained`` (:func:`training_images`): their errors
    measure the model's fit to its training photos, not localization of new ones; in the open
    protocol their own locations are in the default gallery."""
    return np.array([_file_key(str(p)) in trained for p in samples["image_path"]], dtype=bool)
