"""Frozen image features, computed once and cached on disk.

The cache key of an image is the SHA-1 of its bytes plus the backbone's ``cache_key``, so a renamed
or moved photo is not recomputed and an edited one is. Decoding overlaps with the forward pass:
in DataLoader worker processes beside a GPU, in one thread of the main process on a CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import distributed
from .data.tensors import ImageDataset, split_preprocess
from .device import autocast, precision_tag
from .errors import CancelledError
from .io import ProgressFn, default_cache_dir, file_digests, read_cached_npy, save_npy

# Bumped whenever the pixels fed to a trunk change, so no cached feature of the old pixels is
# mixed with new ones (2: JPEGs decoded at the smallest scale the model's input resize needs).
DECODING_VERSION = 2


def decode_workers(device: torch.device, requested: int | None = None) -> int:
    """DataLoader worker processes for decoding images: ``requested``, else none on a CPU and up
    to 4 beside a GPU. On a CPU the forward pass already uses every core, so worker processes only
    add start-up and copying: `make bench` measured the main process decoding faster on 2 cores
    (scenes 30.7 vs 29.1 images/s, photos 24.6 vs 16.5); there :func:`prefetched` overlaps
    decoding with the forward pass instead. Beside a GPU the workers overlap the two."""
    if requested is not None:
        return requested
    return 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)


def prefetched(batches: Iterable) -> Iterator:
    """``batches``, each produced in a background thread while the caller works on the one
    before it. Decoding a JPEG releases the GIL, so on a CPU the next batch decodes while the
    forward pass of this one runs. On the bundled photos (2 cores) it took the pipeline from 0.63
    to 0.69 of the bare forward rate on an idle machine (the forward pass already keeps both
    cores busy) and from 0.69 to 0.99 with 3 other jobs running; generated scenes, cheap to
    decode, stayed at 0.93."""
    source = iter(batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="swclip-decode") as decoder:
        pending = decoder.submit(next, source, None)
        while (batch := pending.result()) is not None:
            pending = decoder.submit(next, source, None)
            yield batch


class FeatureCache:
    """One ``.npy`` file per (backbone, image content) under
    ``root/features/<backbone key>-d<decoding version>/``."""

    def __init__(self, root: Path, backbone_key: str):
        self.folder = Path(root) / "features" / f"{backbone_key}-d{DECODING_VERSION}"

    def path_for(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def load(self, digest: str) -> np.ndarray | None:
        """The cached feature, or None when it is not cached or its file is damaged."""
        feature = read_cached_npy(self.path_for(digest))
        return feature if feature is not None and feature.ndim == 1 else None

    def store(self, digest: str, feature: np.ndarray) -> None:
        save_npy(feature, self.path_for(digest))


def extract_shares(
    backbone,
    image_paths: Sequence[str],
    *,
    device: torch.device,
    cache_dir: Path | None = None,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> None:
    """Under torchrun, each process extracts its share of the distinct images into the on-disk
    cache, then waits for the others, so that every process then reads the whole set from the
    cache (:func:`extract_image_features`); nothing in one process. A process whose node does not
    share the cache folder later computes what it lacks."""
    if distributed.world_size() <= 1:
        return
    share = distributed.local_share(list(dict.fromkeys(image_paths)))
    if share:
        extract_image_features(
            backbone,
            share,
            device=device,
            cache_dir=cache_dir,
            num_workers=num_workers,
            progress=progress,
            cancel=cancel,
        )
    distributed.barrier()


@torch.no_grad()
def extract_image_features(
    backbone,
    image_paths: Sequence[str],
    *,
    device: torch.device,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Frozen image features ``(N, backbone.feature_dim)`` for the given files, cached on disk.

    Pass ``cache_dir=None`` to use :func:`default_cache_dir`, and ``use_cache=False`` for a backbone
    whose image tower was fine-tuned (its features are no longer those of ``backbone.cache_key``).
    ``num_workers`` decoding processes: None chooses (:func:`decode_workers`).
    """
    # Features computed in another precision are other numbers: each precision has its own.
    key = backbone.cache_key + precision_tag(backbone.feature_precision())
    cache = FeatureCache(cache_dir or default_cache_dir(), key) if use_cache else None
    features: list[np.ndarray | None] = [None] * len(image_paths)
    digests: list[str] = []
    if cache:
        # A layer may list one file many times: hash and load it once.
        digest_of = file_digests(image_paths)
        digests = [digest_of[path] for path in image_paths]
        loaded = {digest: cache.load(digest) for digest in dict.fromkeys(digests)}
        features = [loaded[digest] for digest in digests]
    missing = [i for i, f in enumerate(features) if f is None]
    if missing:
        # Workers decode and crop to uint8 pixels; scaling and normalisation run per batch on
        # the device, where they cost next to nothing (and the transfer is 4x smaller).
        split = split_preprocess(backbone.preprocess)
        transform = split.on_cpu if split is not None else backbone.preprocess
        dataset = Subset(ImageDataset(list(image_paths), transform), missing)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=decode_workers(device, num_workers),
            pin_memory=device.type == "cuda",
        )
        backbone.eval()
        done = 0
        batches = loader if loader.num_workers else prefetched(loader)
        bar = tqdm(batches, desc="image features", unit="batch", total=len(loader), leave=False)
        for images, indices in bar:
            if cancel is not None and cancel():
                raise CancelledError("feature extraction cancelled")
            pixels = images.to(device, non_blocking=True)
            if split is not None:
                pixels = split.finish(pixels)
            with autocast(device):
                batch = backbone.image_features(pixels)
            for index, feature in zip(indices.tolist(), batch.float().cpu().numpy(), strict=True):
                features[index] = feature
                if cache is not None:
                    cache.store(digests[index], feature)
            done += len(indices)
            if progress is not None:
                progress(done / len(missing), f"image features {done}/{len(missing)}")
    return torch.from_numpy(np.stack(features)).float()
