"""The benchmark's data sets: generated scenes at real places, real raster patches, real photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd

from swclip_core.data import read_samples
from swclip_core.data.places import load_places, select_places
from swclip_core.data.synthetic import generate_scenes
from swclip_core.io import write_csv

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "resources" / "sample_data"


@dataclass
class Dataset:
    """Samples plus what a reader of the results must know about them."""

    name: str
    samples: gpd.GeoDataFrame
    note: str
    block_m: float  # cell size of the spatial-block split
    epochs: int


def generated_scenes(
    places_csv: Path,
    name: str,
    work: Path,
    *,
    n: int,
    epochs: int,
    country: str | None = None,
    min_per_street: int = 1,
) -> Dataset:
    """Synthetic street scenes drawn at ``n`` real places of a place list (seed 0)."""
    places = select_places(
        load_places(places_csv, country=country), n=n, seed=0, min_per_street=min_per_street
    )
    scenes = generate_scenes(places, work / name, seed=0)
    samples = read_samples(write_csv(scenes, work / f"{name}.csv"))
    note = (
        f"{len(samples)} SYNTHETIC scenes (procedurally drawn) at real places of {places_csv.name}"
    )
    return Dataset(name, samples, note, block_m=1000.0, epochs=epochs)


def landsat_patches(raster: Path, work: Path, *, epochs: int) -> Dataset:
    """Real Landsat 7 patches (natural colour) on a regular grid; patch centres are the truth."""
    samples = read_samples(raster, patch_size=32, patch_stride=24)
    note = f"{len(samples)} real Landsat 7 patches, 32x32 px of 28.5 m, from {raster.name}"
    return Dataset("landsat-raleigh", samples, note, block_m=1500.0, epochs=epochs)


def andros_patches(raster: Path, *, epochs: int) -> Dataset:
    """Real Landsat 7 patches of a second scene at a coarser scale, side by side (no overlap):
    reefs, land, clouds and open ocean that looks alike wherever it is."""
    samples = read_samples(raster, patch_size=32, patch_stride=32)
    note = (
        f"{len(samples)} real Landsat 7 patches, 32x32 px of 300 m (9.6 km), Andros Island and "
        f"the Tongue of the Ocean, Bahamas, from {raster.name}"
    )
    return Dataset("landsat-andros", samples, note, block_m=20000.0, epochs=epochs)


def photos(*, epochs: int) -> Dataset:
    """The 41 bundled real photos (Lund, Sweden; Panoramax samples, France)."""
    samples = read_samples(SAMPLE_DATA / "photos")
    note = f"{len(samples)} real geo-tagged street photos (EXIF GPS), Lund and three French towns"
    return Dataset("photos", samples, note, block_m=100.0, epochs=epochs)
