"""The epoch loop that every trained objective shares.

Batches, optimiser and schedule steps, loss scaling for float16, one metrics line per epoch, a
checkpoint after every epoch (so a run resumes where it stopped), progress and cancel. Objectives
differ only in what they hand to :func:`run_epochs`: a model, its batch loss and any state of their
own (GeoCLIP's GPS queue, for instance).

Under torchrun every process runs this loop over the same batch plan (built from the seed): each
batch is the global batch, the objective embeds this process's share of it
(:func:`~swclip_core.distributed.local_share`) and computes the whole batch's loss; gradients are
averaged over the processes before the optimiser steps, so all of them keep the same weights, and
rank 0 alone writes the checkpoint and metrics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import distributed
from .batches import nearest_neighbours, neighbourhood_batches, random_batches
from .config import TrainConfig
from .device import current_precision
from .errors import CancelledError, ModelError
from .features import decode_workers
from .io import ProgressFn, save_torch, write_bytes
from .runs import CHECKPOINT, METRICS, RESUME_KEYS, Run, load_checkpoint

FEATURE_SHARE = 0.2  # share of a run's progress given to feature extraction in cached mode

BatchLoss = Callable[[np.ndarray, "torch.Tensor | None"], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    epochs: int
    final_loss: float
    samples_per_s: float
    already_complete: bool = False  # resumed a run that had trained all its epochs: nothing done


def finished_run(run_dir: Path, epochs: int) -> TrainResult | None:
    """The result of the run in ``run_dir`` if its checkpoint has all ``epochs`` (a resume then
    has nothing to do), else None."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    state = load_checkpoint(path, needs=RESUME_KEYS)
    if state["epoch"] < epochs:
        return None
    record = state.get("record") or {}
    return TrainResult(
        run_dir,
        int(state["epoch"]),
        float(record.get("loss", math.nan)),
        float(record.get("samples_per_s", 0.0)),
        already_complete=True,
    )


def resumed_metrics(run_dir: Path, state: dict) -> list[dict]:
    """The metrics lines of the epochs ``state`` (a checkpoint) holds, and no others: a run
    killed between its checkpoint and its metrics line gets the line from the checkpoint, and
    lines of epochs past the checkpoint (an older layout wrote them first) are dropped."""
    records = []
    path = run_dir / METRICS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill
                continue
            if isinstance(record, dict) and record.get("epoch", math.inf) <= state["epoch"]:
                records.append(record)
    epochs = {record.get("epoch") for record in records}
    if state["epoch"] not in epochs and state.get("record"):
        records.append(state["record"])
    return records


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    """metrics.jsonl, one line per finished epoch, replaced whole (never half a line)."""
    path = run_dir / METRICS
    write_bytes(path, "".join(json.dumps(record) + "\n" for record in records).encode())


class BatchPlan:
    """The batches of each epoch: every sample once, near places together (see batches.py)."""

    def __init__(self, samples: pd.DataFrame, config: TrainConfig):
        lat, lon = samples["lat"].to_numpy(float), samples["lon"].to_numpy(float)
        self.n = len(samples)
        self.batch_size = config.batch_size
        self.neighbours = nearest_neighbours(lat, lon, config.neighbours_per_anchor)
        self.rng = np.random.default_rng(config.seed)

    @property
    def steps_per_epoch(self) -> int:
        # A one-sample remainder is dropped: a batch of one has no negatives.
        return self.n // self.batch_size + (self.n % self.batch_size >= 2)

    def epoch(self) -> list[np.ndarray]:
        if self.neighbours.shape[1] > 0:
            batches = neighbourhood_batches(self.neighbours, self.batch_size, self.rng)
        else:
            batches = random_batches(self.n, self.batch_size, self.rng)
        return [b for b in batches if len(b) >= 2]


def cosine_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero (a multiplier for LambdaLR)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class Trainable:
    """What one objective brings to the loop."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch_loss: BatchLoss  # (batch indices, decoded images or None) -> (loss, figures to log)
    trainable_state: Callable[[], dict]
    load_trainable_state: Callable[[dict], None]
    # Decoded per batch when the image trunk trains; None when features are cached.
    images: Dataset | None = None
    # False keeps the whole model in eval mode (no dropout) while its heads train.
    train_mode: bool = True
    on_epoch_start: Callable[[int], None] | None = None
    extra_state: Callable[[], dict] | None = None  # saved under the checkpoint's "extra"
    load_extra_state: Callable[[dict], None] | None = None
    epoch_figures: Callable[[], dict] | None = None  # logged with each epoch


def run_epochs(
    objective: Trainable, run: Run, *, progress: ProgressFn | None = None
) -> TrainResult:
    """Train ``run.config.epochs`` epochs (from the last checkpoint when resuming); ``progress``
    is the loop's share of the run's progress."""
    config, run_dir, device, cancel = run.config, run.dir, run.device, run.cancel
    plan = BatchPlan(run.samples, config)
    checkpoint_path = run_dir / CHECKPOINT
    optimizer = objective.optimizer
    total_steps = plan.steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(total_steps, max(1, int(config.warmup_fraction * total_steps)))
    )
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler("cuda", enabled=current_precision(device) == "fp16")
    start_epoch = 0
    if run.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, needs=RESUME_KEYS)
        if state.get("objective", objective.name) != objective.name:
            raise ModelError(
                f"{checkpoint_path} was trained with objective {state['objective']!r}; "
                "resume it with that objective"
            )
        objective.load_trainable_state(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        plan.rng.bit_generator.state = state["rng"]
        if objective.load_extra_state is not None:
            objective.load_extra_state(state["extra"])
        start_epoch = state["epoch"]
        records = resumed_metrics(run_dir, state)
    else:
        records = []  # a fresh run: lines of a killed earlier attempt describe no checkpoint
    # Seeded alike, the processes start alike; as DistributedDataParallel does, make sure.
    distributed.broadcast_parameters(objective.model)
    if distributed.rank() > 0:
        # Dropout draws from torch's global generator, which every process seeded alike: give
        # each its own stream (rank 0 keeps the one-process stream), or the same units would be
        # dropped in every share. Nothing else in a step draws from it (the batch plan and GPS
        # noise have generators of their own), so the loss stays the same on every process.
        torch.manual_seed(config.seed + distributed.rank())
    trained = [p for p in objective.model.parameters() if p.requires_grad]
    processes = {key: getattr(config, key) for key in distributed.PROCESS_FIELDS}

    loss_value, samples_per_s = float("nan"), 0.0
    main = distributed.is_main()
    if main:
        write_metrics(run_dir, records)
    bar = tqdm(range(start_epoch, config.epochs), desc=f"train {objective.name}", unit="epoch")
    for epoch in bar:
        if objective.on_epoch_start is not None:
            objective.on_epoch_start(epoch)
        objective.model.train(objective.train_mode)
        batches = plan.epoch()
        loader = (
            DataLoader(
                objective.images,
                # this process decodes its share of each batch
                batch_sampler=[distributed.local_share(b) for b in batches],
                num_workers=decode_workers(device, config.num_workers),
            )
            if objective.images is not None
            else ((None, None) for _ in batches)
        )
        started = time.perf_counter()
        totals: dict[str, float] = {}
        for step, (idx, (batch_images, _)) in enumerate(zip(batches, loader, strict=True)):
            if cancel is not None and cancel():
                raise CancelledError("training cancelled; the last finished epoch is kept")
            loss, figures = objective.batch_loss(idx, batch_images)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            distributed.average_gradients(trained)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for key, value in {**figures, "loss": float(loss.detach())}.items():
                totals[key] = totals.get(key, 0.0) + value
            if progress is not None:
                done = (epoch - start_epoch) * len(batches) + step + 1
                progress(
                    done / ((config.epochs - start_epoch) * len(batches)),
                    f"epoch {epoch + 1}/{config.epochs}",
                )
        seconds = time.perf_counter() - started
        samples_per_s = sum(len(b) for b in batches) / seconds
        loss_value = totals["loss"] / len(batches)
        if not math.isfinite(loss_value):
            raise ModelError(
                f"training diverged at epoch {epoch + 1} (loss {loss_value}); "
                "lower --lr / --head-lr"
            )
        record = {k: v / len(batches) for k, v in totals.items()}
        record.update(
            epoch=epoch + 1,
            seconds=seconds,
            samples_per_s=samples_per_s,
            lr=scheduler.get_last_lr()[0],
            **processes,
        )
        if objective.epoch_figures is not None:
            record.update(objective.epoch_figures())
        bar.set_postfix(loss=f"{loss_value:.3f}")
        records.append(record)
        if not main:  # rank 0 writes the run folder
            continue
        state = {
            "epoch": epoch + 1,
            "objective": objective.name,
            "backbone": {"name": config.backbone, "pretrained": config.pretrained},
            "model": objective.trainable_state(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": plan.rng.bit_generator.state,
        }
        if objective.extra_state is not None:
            state["extra"] = objective.extra_state()
        state["record"] = record
        save_torch(state, checkpoint_path)
        # After the checkpoint: a line never describes an epoch that was not saved.
        write_metrics(run_dir, records)
    return TrainResult(run_dir, config.epochs, loss_value, samples_per_s)
