"""The run folder: what ``swclip train`` writes, and how it is started, seeded and fingerprinted.

A run folder holds

- ``config.json``: every setting (:class:`~swclip_core.config.TrainConfig`), so any result can
  be reproduced from its folder;
- ``train_samples.csv``: the training locations and their captions, the model's default gallery,
  and each image's content digest (``image_digest``), by which copies of the training photos are
  recognised (:func:`seen_in_training`);
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import distributed
from .captions import CaptionTemplate, captions_for
from .config import TrainConfig
from .data.records import skipped_reasons
from .data.samples import SAMPLE_COLUMNS
from .errors import InputError, ModelError
from .io import ProgressFn, file_digest, file_digests, write_csv

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
TRAIN_SAMPLES = "train_samples.csv"
IMAGE_DIGEST = "image_digest"  # train_samples.csv's column of each image's SHA-1 (file_digest)
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
        skipped = samples.attrs.get("skipped", [])
        why = f"; {len(skipped)} skipped: {skipped_reasons(skipped)}" if skipped else ""
        raise InputError(f"training needs at least 2 usable samples, got {len(samples)}{why}")
    run_dir = Path(run_dir)
    samples = samples.reset_index(drop=True)
    # Each image is read once, for both the run's input digest and train_samples.csv's digests
    # (and the feature cache then finds them in file_digest's memory).
    images = file_digests(samples["image_path"])
    config = replace(config, input_digest=samples_digest(samples, images))
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
        table = table.assign(caption=captions, **{IMAGE_DIGEST: samples["image_path"].map(images)})
        write_csv(table, run_dir / TRAIN_SAMPLES)
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


def samples_digest(samples: pd.DataFrame, images: Mapping[str, str] | None = None) -> str:
    """SHA-1 of what a run learns from: each sample's id, coordinates, labels and image content
    (not where the files are), in order. ``images``: the images' digests by path, when the
    caller has them (:func:`~swclip_core.io.file_digests`)."""
    digest = hashlib.sha1(usedforsecurity=False)
    columns = [c for c in SAMPLE_COLUMNS if c not in ("image_path", "geometry") and c in samples]
    digest.update(samples[columns].to_csv(index=False).encode())
    if images is None:
        images = file_digests(samples["image_path"])
    for path in samples["image_path"]:
        digest.update(images[path].encode())
    return digest.hexdigest()


def read_config(run_dir: str | Path) -> TrainConfig:
    """The settings of a run folder; :class:`ModelError` when it is not one."""
    path = Path(run_dir) / CONFIG
    if Path(run_dir).is_file():  # e.g. its config.json, picked in a file dialog
        raise ModelError(
            f"{run_dir} is a file; give the model's folder (the one holding {CONFIG}), e.g. "
            f"{Path(run_dir).parent}"
        )
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


@dataclass(frozen=True)
class TrainingImages:
    """The images that trained a model, as its ``train_samples.csv`` lists them: the content
    digests of those listed with one, and the file paths (:func:`_file_key`) of those without,
    which is every image of a model trained before the digests were recorded."""

    digests: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()


def training_images(run_dir: Path) -> TrainingImages:
    """The images that trained the model in ``run_dir``, read once for any number of
    :func:`seen_in_training` calls; none for a model folder that does not list its photos."""
    wanted = ("image_path", IMAGE_DIGEST)  # IMAGE_DIGEST is absent from older models' tables
    try:
        trained = pd.read_csv(
            Path(run_dir) / TRAIN_SAMPLES, usecols=lambda c: c in wanted, dtype=str
        )
    except (OSError, ValueError):  # absent or unreadable
        return TrainingImages()
    if "image_path" not in trained:
        return TrainingImages()
    digests = trained.get(IMAGE_DIGEST, pd.Series(index=trained.index, dtype=str))
    return TrainingImages(
        digests=frozenset(digests.dropna()),
        paths=frozenset(_file_key(p) for p in trained["image_path"][digests.isna()].dropna()),
    )


def seen_in_training(samples: pd.DataFrame, trained: TrainingImages) -> np.ndarray:
    """Which of ``samples``' photos trained the model (``trained``, :func:`training_images`):
    their errors measure the model's fit to its training photos, not localization of new ones;
    in the open protocol their own locations are in the default gallery.

    A photo counts when its content equals a training image's, wherever the file lies (a copy in
    a test folder is the same photo to the model; so is a raster patch with the same pixels as a
    training patch). Only the photos scored are hashed, each once, and the feature cache has
    usually just hashed them (:func:`~swclip_core.io.file_digest` remembers). A model trained
    before the digests were recorded is matched by file path, which misses copies.
    """
    paths = [str(p) for p in samples["image_path"]]
    seen = {path: _file_key(path) in trained.paths for path in dict.fromkeys(paths)}
    if trained.digests:
        for path, known in seen.items():
            seen[path] = known or _digest_or_none(path) in trained.digests
    return np.array([seen[path] for path in paths], dtype=bool)


def _digest_or_none(path: str) -> str | None:
    # A photo scored a moment ago but moved or deleted since is left to the path comparison.
    try:
        return file_digest(path)
    except OSError:
        return None
