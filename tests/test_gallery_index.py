"""Gallery search beyond memory: streamed exact search, faiss indexes and their on-disk cache."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from swclip_core import gallery_index, retrieval
from swclip_core.captions import captions_for
from swclip_core.config import EXACT_MAX_ENTRIES
from swclip_core.errors import InputError
from swclip_core.gallery_index import resolve_kind
from swclip_core.retrieval import build_gallery, embed_captions, streamed_top_k, top_k
from tests.conftest import REPO

PLACES = REPO / "resources" / "sample_data" / "places"


def real_places() -> pd.DataFrame:
    """The bundled real places (OSM addresses and highways, OS Open Names), as gallery rows."""
    addresses = pd.read_csv(PLACES / "isleofman_addresses.csv").rename(
        columns={"addr:street": "street", "addr:city": "city"}
    )
    highways = pd.read_csv(PLACES / "isleofman_named_highways.csv").rename(
        columns={"name": "street"}
    )
    names = pd.read_csv(PLACES / "os_open_names_roads_places.csv").rename(
        columns={"name": "street", "populated_place": "city"}
    )
    frames = [addresses[["lat", "lon", "street", "city"]], highways[["lat", "lon", "street"]]]
    frames.append(names[["lat", "lon", "street", "city", "country"]])
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def caption_gallery():
    """A 10^5-entry gallery made of real caption embeddings, and real caption queries.

    Embedding 10^5 captions takes minutes on 2 cores, so 200 real place captions are embedded by
    the default backbone and every gallery entry is the normalised mix w·a + (1 - w)·b of two of
    them (w uniform): the entries stay on the manifold real captions occupy, clustered as theirs
    are, and near-ties abound, which is where an approximate index errs. The 100 queries are
    further real captions, none of them in the gallery.
    """
    from swclip_core.models import create_backbone

    rng = np.random.default_rng(0)
    places = real_places()
    picked = places.iloc[rng.choice(len(places), 300, replace=False)].reset_index(drop=True)
    backbone = create_backbone("swclip-lite", device=torch.device("cpu"))
    embedded = embed_captions(backbone, captions_for(picked), device=torch.device("cpu"))
    base, queries = embedded[:200], embedded[200:]
    pairs = torch.from_numpy(rng.integers(0, len(base), (100_000, 2)))
    mix = torch.from_numpy(rng.uniform(0, 1, (100_000, 1))).float()
    gallery = F.normalize(mix * base[pairs[:, 0]] + (1 - mix) * base[pairs[:, 1]], dim=1)
    return gallery.numpy(), queries


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_finds_the_exact_top5(caption_gallery, kind):
    gallery, queries = caption_gallery
    _, exact_rows = top_k(queries, torch.from_numpy(gallery), 5)
    scores, rows = gallery_index.open_index(gallery, kind).search(queries, 5)
    overlap = np.mean(
        [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(rows, exact_rows, strict=True)]
    )
    assert overlap >= 0.95
    # the scores are exact cosine similarities of the rows found, best first
    expected = torch.einsum("qd,qkd->qk", queries, torch.from_numpy(gallery)[rows])
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    assert rows.shape == (len(queries), 5) and len(set(rows[0].tolist())) == 5


def test_the_hnsw_search_beam_widens_with_the_gallery(monkeypatch):
    beams = [gallery_index.hnsw_ef_search(n) for n in (10, 10**6, 10**6 + 1, 4 * 10**6, 10**7)]
    assert beams == [1024, 1024, 2048, 2048, 4096]  # 4096: what 10^7 needed (benchmarks/scale.md)
    # an opened index searches with the beam of its own size
    monkeypatch.setattr(gallery_index, "hnsw_ef_search", lambda size: size + 7)
    points = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    searched = gallery_index.open_index(points / np.linalg.norm(points, axis=1)[:, None], "hnsw")
    assert searched.index.hnsw.efSearch == 307


@pytest.mark.parametrize("gallery_rows", [1, 7, 64, None])
def test_streamed_top_k_equals_top_k(gallery_rows):
    gen = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(23, 16, generator=gen), dim=1)
    gallery = F.normalize(torch.randn(101, 16, generator=gen), dim=1)
    expected = top_k(queries, gallery, 5)
    stored = gallery.numpy().astype(np.float16).astype(np.float32)  # any float dtype on disk
    got = streamed_top_k(queries, stored, 5, gallery_rows=gallery_rows)
    exact = top_k(queries, torch.from_numpy(stored), 5)
    assert torch.equal(got[1], exact[1]) and torch.allclose(got[0], exact[0])
    assert (got[1] == expected[1]).float().mean() > 0.9  # float16 storage barely moves a rank


def test_auto_is_exact_up_to_the_threshold():
    assert resolve_kind("auto", EXACT_MAX_ENTRIES) == "exact"
    assert resolve_kind("auto", EXACT_MAX_ENTRIES + 1) == "ivf"
    assert resolve_kind("hnsw", 10) == "hnsw"
    with pytest.raises(InputError, match="unknown gallery index"):
        resolve_kind("annoy", 10)


def test_an_index_file_names_how_the_index_was_built(tmp_path, monkeypatch):
    embeddings = tmp_path / "gallery-abc.npy"
    ivf, hnsw = (gallery_index.index_file(embeddings, kind) for kind in ("ivf", "hnsw"))
    assert ivf.name == "gallery-abc.ivf-sqfp16.faiss"
    assert hnsw.name.startswith("gallery-abc.hnsw-sqfp16-")
    # a graph built with another search beam is rebuilt, not read
    monkeypatch.setattr(gallery_index, "HNSW_EF_CONSTRUCTION", 200)
    assert gallery_index.index_file(embeddings, "hnsw") != hnsw


class LocationEncoder:
    """A stand-in model with GeoCLIP's gallery interface: embeddings from coordinates."""

    calls = 0

    def embed_locations(self, table: pd.DataFrame, device) -> torch.Tensor:
        LocationEncoder.calls += 1
        lat = torch.as_tensor(table["lat"].to_numpy(float), dtype=torch.float32)
        lon = torch.as_tensor(table["lon"].to_numpy(float), dtype=torch.float32)
        waves = [torch.sin(lat * f) for f in range(1, 5)] + [torch.cos(lon * f) for f in range(4)]
        return F.normalize(torch.stack(waves, dim=1), dim=1)


def small_table(n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(50, 55, n), rng.uniform(-5, 0, n)
    return pd.DataFrame(
        {
            "lat": lat,
            "lon": lon,
            "caption": [f"{a:.5f} {b:.5f}" for a, b in zip(lat, lon, strict=True)],
        }
    )


def test_gallery_streams_to_disk_and_its_index_is_built_once(tmp_path, monkeypatch):
    table = small_table()
    monkeypatch.setattr(retrieval, "EMBED_CHUNK", 1000)
    LocationEncoder.calls = 0
    cpu = torch.device("cpu")
    gallery = build_gallery(
        LocationEncoder(), table, device=cpu, model_fingerprint="a", cache_dir=tmp_path, index="ivf"
    )
    assert LocationEncoder.calls == 3  # three chunks, written one after the other
    (stored,) = tmp_path.glob("gallery-*.npy")
    (index_file,) = tmp_path.glob("gallery-*.ivf-sqfp16.faiss")
    assert index_file.stem.startswith(stored.stem)
    assert isinstance(gallery.embeddings, np.memmap)
    in_memory = LocationEncoder().embed_locations(table, cpu)
    assert np.array_equal(np.load(stored), in_memory.numpy())
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written left behind

    def no_build(*args, **kwargs):
        raise AssertionError("the cached index was built again")

    monkeypatch.setattr(gallery_index, "build_index", no_build)
    again = build_gallery(
        LocationEncoder(), table, device=cpu, model_fingerprint="a", cache_dir=tmp_path, index="ivf"
    )
    assert LocationEncoder.calls == 4  # only the reference embedding above: the cache served
    queries = in_memory[:50]
    assert torch.equal(again.search(queries, 3)[1], gallery.search(queries, 3)[1])
    # another model (or another gallery) never reuses them
    with pytest.raises(AssertionError, match="built again"):
        build_gallery(
            LocationEncoder(),
            table,
            device=cpu,
            model_fingerprint="b",
            cache_dir=tmp_path,
            index="ivf",
        )
    with pytest.raises(AssertionError, match="built again"):
        build_gallery(
            LocationEncoder(),
            table.iloc[:-1],
            device=cpu,
            model_fingerprint="a",
            cache_dir=tmp_path,
            index="ivf",
        )


def test_exact_search_of_a_cached_gallery_matches_the_in_memory_one(tmp_path):
    table = small_table(500)
    cpu = torch.device("cpu")
    cached = build_gallery(
        LocationEncoder(), table, device=cpu, model_fingerprint="a", cache_dir=tmp_path
    )
    in_memory = build_gallery(LocationEncoder(), table, device=cpu, model_fingerprint="a")
    assert cached.index is None and isinstance(in_memory.embeddings, torch.Tensor)
    queries = in_memory.embeddings[::7]
    assert torch.equal(cached.search(queries, 5)[1], in_memory.search(queries, 5)[1])


@pytest.mark.parametrize("damaged", ["embeddings", "index"])
def test_a_damaged_gallery_cache_is_rebuilt_not_trusted(tmp_path, damaged):
    table = small_table(500)
    cpu = torch.device("cpu")

    def gallery():
        return build_gallery(
            LocationEncoder(),
            table,
            device=cpu,
            model_fingerprint="a",
            cache_dir=tmp_path,
            index="ivf",
        )

    first = gallery()
    rows = torch.arange(0, len(table), 7)
    queries = torch.tensor(np.array(first.embeddings[rows]))  # a copy: the file is cut below
    (path,) = tmp_path.glob("gallery-*.npy" if damaged == "embeddings" else "gallery-*.faiss")
    good = path.read_bytes()
    del first
    for cut in (0, 100, len(good) // 2):  # emptied, header cut, data cut short
        path.write_bytes(good[:cut])
        LocationEncoder.calls = 0
        again = gallery()
        assert LocationEncoder.calls == (1 if damaged == "embeddings" else 0)
        assert torch.equal(again.search(queries, 1)[1].flatten(), rows)  # each row finds itself
        # the damaged entry was replaced (k-means under several threads may place the index's
        # centroids otherwise: its file need not be the same bytes)
        if damaged == "embeddings":
            assert path.read_bytes() == good
        else:
            assert faiss.read_index(str(path)).ntotal == len(table)
        del again


def test_the_command_line_lists_index_kinds_without_loading_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom swclip_core.cli import build_parser\nbuild_parser()\n"
        "print('torch' in sys.modules, 'faiss' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
