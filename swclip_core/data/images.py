"""Decode street-view photos into RGB images, fast and the right way up.

Every image the toolkit feeds a model goes through :func:`load_image`, so training, prediction and
galleries see the same pixels whatever the file's mode, orientation or size. Turning them into
tensors is :mod:`swclip_core.data.tensors`' part; this module does not need torch.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

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
# JPEGs decode at a reduced scale (Image.draft); other formats only decode whole. Above this many
# pixels (about 256 MB as RGBA) such a file is refused with a reason instead of decoded in full: a
# 144-megapixel PNG would take 1.2 GB per decoding process.
MAX_FULL_DECODE_PIXELS = 64_000_000


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
            if draft_size is not None and isinstance(opened, JpegImageFile):  # MPO too
                opened.draft("RGB", draft_size)
            elif opened.width * opened.height > MAX_FULL_DECODE_PIXELS:
                raise InputError(
                    f"Cannot decode image {os.fspath(path)!r} at a reduced size: it is a "
                    f"{opened.width}x{opened.height} {opened.format} "
                    f"({opened.width * opened.height / 1e6:.0f} megapixels). Reduce it to at most "
                    f"{MAX_FULL_DECODE_PIXELS / 1e6:.0f} megapixels or save it as a JPEG."
                )
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
