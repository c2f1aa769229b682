"""Decode street-view photos into RGB images, fast and the right way up.

Every image the toolkit feeds a model goes through :func:`load_image`, so training, prediction and
galleries see the same pixels whatever the file's mode, orientation or size.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from swclip_core.errors import InputError

_WHITE = (255, 255, 255, 255)
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
"""What Pillow raises on corrupt, truncated or unsupported files (struct.error and EOFError come
from malformed TIFF/PNG headers, DecompressionBombError from absurd declared sizes)."""


def _draft_size(
    size: tuple[int, int], max_side: int, min_side: int | None = None
) -> tuple[int, int] | None:
    """The smallest size, with the image's aspect ratio, that still covers ``max_side`` on the
    longer side (and no more than ``min_side`` on the shorter side, when given)."""
    scale = max_side / max(size)
    if min_side is not None:
        scale = min(scale, min_side / min(size))
    if scale >= 1:
        return None
    return (math.ceil(size[0] * scale), math.ceil(size[1] * scale))


def _scale_to_uint8(values: np.ndarray, full_scale: float | None) -> Image.Image:
    """Greyscale 8-bit image from high bit-depth samples.

    With a known full scale (65535 for 16-bit) the mapping is linear from 0 so that brightness
    means the same in every image; otherwise (floats, odd integer ranges) the range is stretched.
    """
    values = values.astype(np.float64)
    if full_scale is None:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        values = (values - low) / ((high - low) or 1.0)
    else:
        values = values / full_scale
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        image = _scale_to_uint8(np.asarray(image), 65535.0)
    elif mode == "I":
        values = np.asarray(image)
        # Pillow opens 16-bit PNG/TIFF greyscale as "I"; keep their 0..65535 scale.
        in_16_bit_range = values.size and values.min() >= 0 and values.max() <= 65535
        image = _scale_to_uint8(values, 65535.0 if in_16_bit_range else None)
    elif mode == "F":
        values = np.asarray(image)
        unit_range = values.size and np.nanmin(values) >= 0 and np.nanmax(values) <= 1
        image = _scale_to_uint8(values, 1.0 if unit_range else None)
    elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in image.info
    ):
        # Transparent pixels become white, not the arbitrary colour stored under alpha 0.
        background = Image.new("RGBA", image.size, _WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_image(
    path: str | os.PathLike, *, max_side: int = 2048, min_side: int | None = None
) -> Image.Image:
    """Load an image file as an RGB ``PIL.Image`` whose longer side is at most ``max_side``.

    The EXIF orientation is applied (phones and street-view cameras often store rotated pixels);
    greyscale, palette, 16-bit and float images are converted to 8-bit RGB and transparency is
    composited on white. Large JPEGs are decoded at a reduced scale (``Image.draft``) before the
    final resize, so a 5760x2880 panorama does not have to be decoded in full; a caller that only
    needs the shorter side to reach ``min_side`` pixels (a model's input resize) lets that
    reduction go as far as ``min_side`` allows (a panorama fed to a 224-pixel model decodes at 1/8).
    Raises :class:`InputError` naming the file when it cannot be read.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    try:
        with Image.open(path) as opened:
            draft_size = _draft_size(opened.size, max_side, min_side)
            if draft_size is not None:
                opened.draft("RGB", draft_size)  # a no-op for formats other than JPEG
            opened.load()
            image = ImageOps.exif_transpose(opened)
            image = _to_rgb(image)
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    except DECODE_ERRORS as error:
        raise InputError(
            f"Cannot read image {os.fspath(path)!r}: {error}. Check that the file is a complete "
            "JPEG, PNG or TIFF image, or remove the record."
        ) from error
    return image


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
