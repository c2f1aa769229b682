"""The interface every training objective implements (docs/method.md, "Objectives").

An objective says what it trains and with which loss (:meth:`Objective.fit`), how its run folder
becomes a model (:meth:`Objective.load`), how that model embeds a gallery of candidate locations
(:meth:`Objective.embed_gallery`) and how it localizes: against such a gallery
(``caption_gallery = True``, the default) or against the training images themselves
(:meth:`Objective.image_gallery`). Starting the run folder, seeding, the epoch loop, evaluation
and the command line are shared and live elsewhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import TrainConfig
from ..errors import InputError
from ..runs import CHECKPOINT, Run

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from ..loop import TrainResult
    from .image_knn import KnnLocalizer


class Objective(ABC):
    """One way to train a model that localizes photos, and how that model localizes."""

    name: ClassVar[str]  # the key in the registry and the value of --objective
    # The file whose presence means a run folder already holds this objective's model.
    marker: ClassVar[str] = CHECKPOINT
    # True: photos are localized against a gallery of candidate locations (captions, or
    # coordinates), so R@1, Geo-Align and --gallery/--fuse apply. False: against the training
    # images (:meth:`image_gallery`).
    caption_gallery: ClassVar[bool] = True
    # True: :meth:`fit` trains under torchrun with several processes (the global batch split
    # across them, rank 0 writing the run folder; swclip_core.distributed). False: it refuses.
    distributed: ClassVar[bool] = False

    def prepare(self, config: TrainConfig, samples: pd.DataFrame) -> TrainConfig:
        """The settings to train with, completed from the samples; InputError when they cannot
        work for this objective. Runs before the run folder is written."""
        return config

    def finished(self, run_dir: Path, config: TrainConfig) -> TrainResult | None:
        """The result of a resumed run that has nothing left to do, else None."""
        from ..loop import finished_run

        return finished_run(run_dir, config.epochs)

    @abstractmethod
    def fit(self, run: Run) -> TrainResult:
        """Train on ``run.samples`` into ``run.dir`` (the folder and the seed are set up)."""

    @abstractmethod
    def load(self, run_dir: Path, config: TrainConfig, device: torch.device) -> Any:
        """The trained network of a run folder, in eval mode on ``device``."""

    def embed_gallery(
        self, network: Any, table: pd.DataFrame, device: torch.device
    ) -> torch.Tensor:
        """L2-normalised embeddings ``(G, D)`` of a gallery table (lat, lon, caption), CPU."""
        from .. import retrieval

        captions = table["caption"].astype(str).tolist()
        return retrieval.embed_captions(network, captions, device=device)

    def image_gallery(self, run_dir: Path, network: Any, device: torch.device) -> KnnLocalizer:
        """The training images a ``caption_gallery = False`` objective localizes against."""
        raise InputError(f"objective {self.name} localizes against a gallery of locations")
