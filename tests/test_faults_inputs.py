"""Bad records are skipped and listed, whatever the input kind, and CSV outputs are safe to open:
photo-folder links, gallery rows, formula-like cells, per-output skipped lists, very
large images. Each case runs the command as a user does and checks the exit code, the message,
what is listed and that the input is untouched."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pandas as pd
import pyogrio
import pytest
from PIL import Image

from swclip_core.cli import EXIT_PARTIAL, main
from swclip_core.data import read_exif_gps, read_samples
from swclip_core.io import FORMULA_STARTS

from .cli_process import swclip, tree
from .conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow
GOOD = ["lund_01.jpg", "lund_05.jpg", "lund_10.jpg", "lund_15.jpg", "lund_20.jpg"]


def photo_rows(folder, names=GOOD):
    """Copies of bundled photos in ``folder`` and their CSV rows (id, image, lat, lon)."""
    rows = []
    for name in names:
        shutil.copy(PHOTOS / name, folder / name)
        lat, lon = read_exif_gps(PHOTOS / name)
        rows.append({"id": name.removesuffix(".jpg"), "image": name, "lat": lat, "lon": lon})
    return rows


@pytest.fixture(scope="module")
def model(tmp_path_factory, feature_cache):
    """A one-epoch model on five bundled photos: enough to run predict end to end."""
    folder = tmp_path_factory.mktemp("model-data")
    pd.DataFrame(photo_rows(folder)).to_csv(folder / "train.csv", index=False)
    run = folder / "run"
    args = ["train", folder / "train.csv", "--out", run, "--epochs", 1, "--batch-size", 4]
    assert main([*map(str, args), "--cache-dir", str(feature_cache)]) == 0
    return run


def test_photo_folder_lists_broken_links_and_loops_reads_linked_folders(tmp_path, feature_cache):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo_rows(folder, GOOD[:3])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(PHOTOS / GOOD[3], elsewhere / GOOD[3])
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    before = tree(folder)
    run = tmp_path / "run"
    result = swclip("train", folder, "--out", run, "--epochs", 1, "--cache-dir", feature_cache)
    assert result.code == EXIT_PARTIAL, result.err
    assert "Traceback" not in result.err
    listed = pd.read_csv(run / "skipped.csv").set_index("record")["reason"]
    assert set(listed.index) == {"loop/", "gone.jpg", "broken.jpg"}
    assert "does not exist" in listed["gone.jpg"] and "already read" in listed["loop/"]
    trained = pd.read_csv(run / "train_samples.csv")
    assert sorted(trained["sample_id"]) == sorted(n.removesuffix(".jpg") for n in GOOD[:4])
    assert tree(folder) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_photo_and_folder_are_listed(tmp_path):
    folder = tmp_path / "photos"
    (folder / "private").mkdir(parents=True)
    photo_rows(folder, GOOD[:2])
    shutil.copy(PHOTOS / GOOD[2], folder / "private" / GOOD[2])
    (folder / GOOD[1]).chmod(0)
    (folder / "private").chmod(0)
    try:
        samples = read_samples(folder)
    finally:
        (folder / GOOD[1]).chmod(0o644)
        (folder / "private").chmod(0o755)
    listed = {s["record"]: s["reason"] for s in samples.attrs["skipped"]}
    assert set(listed) == {GOOD[1], "private/"}
    assert len(samples) == 1


def places_csv(path, rows):
    pd.DataFrame(rows, columns=["lat", "lon", "city"]).to_csv(path, index=False)
    return path


BAD_PLACES = [
    (55.7047, 13.1910, "Lund"),
    (55.7100, 13.2000, "Lund"),
    ("", 13.2, "no lat"),
    (95.0, 13.2, "polar"),
    ("abc", 13.2, "text"),
]


def test_predict_lists_unusable_gallery_rows_and_exits_4(tmp_path, model, feature_cache):
    places = places_csv(tmp_path / "places.csv", BAD_PLACES)
    before = places.read_bytes()
    pd.DataFrame(photo_rows(tmp_path, GOOD[:2])).to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "pred.gpkg"
    result = swclip(
        "predict", tmp_path / "in.csv", "--model", model, "--out", out, "--gallery", places,
        "--cache-dir", feature_cache,
    )  # fmt: skip
    assert result.code == EXIT_PARTIAL, result.err
    assert "against 2 gallery locations" in result.out
    listed = pd.read_csv(tmp_path / "pred.skipped.csv")
    assert listed["record"].tolist() == [f"gallery places.csv row {n}" for n in (3, 4, 5)]
    layer = pyogrio.read_dataframe(out, layer="skipped_records")
    assert layer["record"].tolist() == listed["record"].tolist()
    assert places.read_bytes() == before


def test_gallery_command_lists_its_skipped_rows(tmp_path):
    places = places_csv(tmp_path / "places.csv", BAD_PLACES)
    out = tmp_path / "gallery.gpkg"
    result = swclip("gallery", "--points", places, "--out", out)
    assert result.code == EXIT_PARTIAL, result.err
    assert "wrote" in result.out and "2 gallery locations" in result.out
    assert len(pd.read_csv(tmp_path / "gallery.skipped.csv")) == 3


FORMULAS = ['=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "+cmd|' /C calc'!A0", "-2+3"]


def test_formula_like_cells_are_neutralised_in_every_csv(tmp_path, feature_cache):
    rows = photo_rows(tmp_path, GOOD[:5])
    for row, formula in zip(rows, [*FORMULAS, "-3"], strict=True):
        row["id"] = formula  # "-3" is a number a spreadsheet shows as such: left as it is
    rows.append({"id": "=1+1", "image": "=missing.jpg", "lat": 55.7, "lon": 13.2})
    pd.DataFrame(rows).to_csv(tmp_path / "in.csv", index=False)
    run = tmp_path / "run"
    args = ["train", tmp_path / "in.csv", "--out", run, "--epochs", 1, "--batch-size", 4]
    assert main([*map(str, args), "--cache-dir", str(feature_cache)]) == EXIT_PARTIAL
    for name in ("skipped.csv", "train_samples.csv"):
        with open(run / name, newline="") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        dangerous = [c for c in cells if c.startswith(FORMULA_STARTS) and not is_number(c)]
        assert not dangerous, (name, dangerous)
    ids = pd.read_csv(run / "train_samples.csv", dtype=str)["sample_id"].tolist()
    assert ids == [*("'" + f for f in FORMULAS), "-3"]  # shown as the text they are
    assert pd.read_csv(run / "skipped.csv")["record"].tolist() == ["'=1+1"]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_skipped_lists_belong_to_their_output_and_stale_ones_go(tmp_path, model, feature_cache):
    rows = photo_rows(tmp_path, GOOD[:2])
    pd.DataFrame(rows).to_csv(tmp_path / "clean.csv", index=False)
    bad = [*rows, {"id": "ghost", "image": "nowhere.jpg", "lat": 55.7, "lon": 13.2}]
    pd.DataFrame(bad).to_csv(tmp_path / "bad.csv", index=False)
    outputs = tmp_path / "outputs"

    def predict(source, name):
        args = ["predict", tmp_path / source, "--model", model, "--out", outputs / name]
        return main([*map(str, args), "--cache-dir", str(feature_cache)])

    assert predict("bad.csv", "a.gpkg") == EXIT_PARTIAL
    assert predict("clean.csv", "b.gpkg") == 0
    assert pd.read_csv(outputs / "a.skipped.csv")["record"].tolist() == ["ghost"]
    assert not (outputs / "b.skipped.csv").exists() and not (outputs / "skipped.csv").exists()
    assert predict("clean.csv", "a.gpkg") == 0  # a clean re-run: the old list no longer applies
    assert not (outputs / "a.skipped.csv").exists()


def test_a_144_megapixel_png_is_listed_not_decoded_in_full(tmp_path):
    rows = photo_rows(tmp_path, GOOD[:1])
    Image.new("RGB", (16_000, 9_000), (90, 120, 150)).save(tmp_path / "huge.png")
    rows.append({"id": "huge", "image": "huge.png", "lat": 55.7, "lon": 13.2})
    pd.DataFrame(rows).to_csv(tmp_path / "in.csv", index=False)
    with pytest.warns(Image.DecompressionBombWarning):
        samples = read_samples(tmp_path / "in.csv")
    (reason,) = [s["reason"] for s in samples.attrs["skipped"] if s["record"] == "huge"]
    assert "144 megapixels" in reason and "JPEG" in reason
    assert len(samples) == 1


def test_a_144_megapixel_jpeg_decodes_at_the_model_input_size(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (16_000, 9_000), (90, 120, 150)).save(path, quality=80)
    code = f"""
import resource, warnings
warnings.simplefilter("ignore")
from torchvision import transforms
from swclip_core.data.tensors import ImageDataset
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
preprocess = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])
image, _ = ImageDataset([{str(path)!r}], preprocess)[0]
assert image.size == (224, 224)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    grown_mb = int(result.stdout.split()[-1])
    assert grown_mb < 150, f"decoding took {grown_mb} MB; in full it takes about 600 MB"
