"""Images as model inputs: a torch dataset of image files and CLIP preprocessing split between
the decoding workers (geometry, uint8 pixels) and the model's device (scaling, normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from swclip_core.data.images import load_image


class ImageDataset(Dataset):
    """Map-style dataset of image files for a ``DataLoader`` (worker processes included).

    Item ``i`` is ``(transform(load_image(paths[i])), i)``; the index lets callers put features back
    in sample order. A file that cannot be read raises :class:`InputError` naming it. JPEGs are
    decoded no larger than the transform's first resize needs (:func:`resize_side`).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        max_side: int = 2048,
    ) -> None:
        # Plain strings keep the dataset cheap to pickle into worker processes.
        self.paths = [os.fspath(path) for path in paths]
        self.transform = transform
        self.max_side = max_side
        self.min_side = resize_side(transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[index], max_side=self.max_side, min_side=self.min_side)
        return self.transform(image), index


def resize_side(transform: Callable) -> int | None:
    """The shorter side (pixels) that ``transform`` resizes images to before anything else looks at
    them, when it starts with a torchvision ``Resize`` to one size (CLIP preprocessing does);
    ``None`` when it cannot be told, and images are then decoded at full size."""
    from torchvision.transforms import Resize

    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, Resize):
            size = step.size
            if isinstance(size, int):
                return size
            return size[0] if len(size) == 1 else None
        # Mode conversions (ours, open_clip's) keep the pixel grid; anything else first (a crop,
        # an augmentation) may need the full resolution.
        keeps_grid = getattr(step, "keeps_pixel_grid", False)
        if not keeps_grid and getattr(step, "__name__", "") != "_convert_to_rgb":
            return None
    return None


class _ToUint8Tensor:
    """RGB ``PIL.Image`` to a ``(3, H, W)`` uint8 tensor (a class, so DataLoaders can pickle it)."""

    keeps_pixel_grid = True

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@dataclass
class SplitPreprocess:
    """A CLIP preprocessing split in two: the geometric steps on the CPU, ending in uint8 pixels
    (4x less to move between processes and to the GPU than float32), and the scaling to floats
    and normalisation, done on a whole batch on the model's device (:meth:`finish`)."""

    on_cpu: Callable[[Image.Image], torch.Tensor]
    mean: torch.Tensor  # (3,)
    std: torch.Tensor  # (3,)

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` to the normalised float batch the unsplit transform gives."""
        # (x / 255 - mean) / std as one multiply and one subtract, in place on the float copy.
        scale = (1.0 / (255.0 * self.std)).to(pixels.device).view(1, 3, 1, 1)
        shift = (self.mean / self.std).to(pixels.device).view(1, 3, 1, 1)
        return pixels.float().mul_(scale).sub_(shift)


def split_preprocess(transform: Callable) -> SplitPreprocess | None:
    """Split a torchvision ``Compose`` that ends in to-tensor then ``Normalize`` (CLIP's and
    open_clip's preprocessing do); ``None`` for any other transform, which is used as it is."""
    from torchvision.transforms import Compose, Normalize

    steps = list(getattr(transform, "transforms", []))
    if (
        len(steps) < 2
        or not isinstance(steps[-1], Normalize)
        or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor")
    ):
        return None
    normalize = steps[-1]
    return SplitPreprocess(
        Compose([*steps[:-2], _ToUint8Tensor()]),
        torch.as_tensor(normalize.mean, dtype=torch.float32),
        torch.as_tensor(normalize.std, dtype=torch.float32),
    )
