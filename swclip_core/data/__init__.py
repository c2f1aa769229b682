"""Readers for geo-tagged street-view samples, and the image loader all model inputs go through.

Nothing in this package but :mod:`swclip_core.data.tensors` imports torch.
"""

from swclip_core.columns import SAMPLE_COLUMNS
from swclip_core.data.exif import read_exif_gps
from swclip_core.data.images import load_image
from swclip_core.data.samples import read_samples

__all__ = ["SAMPLE_COLUMNS", "load_image", "read_exif_gps", "read_samples"]
