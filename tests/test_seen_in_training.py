"""Which scored photos trained a model: by image content, or by file path for older models."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from swclip_core import io, runs
from swclip_core.config import TrainConfig
from swclip_core.data import read_samples
from swclip_core.runs import (
    CHECKPOINT,
    IMAGE_DIGEST,
    TRAIN_SAMPLES,
    seen_in_training,
    start_run,
    training_images,
)

from .conftest import PHOTOS

TRAINED = ["lund_01.jpg", "lund_02.jpg", "lund_03.jpg"]


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as `swclip train` starts it (train_samples.csv), from three bundled photos."""
    photos = read_samples(PHOTOS)
    samples = photos[photos["image_path"].map(os.path.basename).isin(TRAINED)]
    assert len(samples) == len(TRAINED)
    run, *_ = start_run(samples, TrainConfig(), tmp_path / "run", marker=CHECKPOINT, resume=False)
    return run


def scored(*paths) -> pd.DataFrame:
    return pd.DataFrame({"image_path": [str(p) for p in paths]})


def test_a_copy_of_a_training_photo_counts_and_another_photo_does_not(run_dir, tmp_path):
    # researchers copy photos into train and test folders: the copy is the same photo to the model
    copy = tmp_path / "test" / "IMG_0003.jpg"
    copy.parent.mkdir()
    shutil.copyfile(PHOTOS / "lund_03.jpg", copy)
    edited = tmp_path / "test" / "lund_02.jpg"  # one byte changed: another image
    edited.write_bytes((PHOTOS / "lund_02.jpg").read_bytes()[:-1] + b"\x00")
    photos = scored(copy, PHOTOS / "lund_01.jpg", PHOTOS / "lund_04.jpg", edited, copy)
    seen = seen_in_training(photos, training_images(run_dir))
    assert seen.tolist() == [True, True, False, False, True]


def test_train_samples_records_each_images_content_digest(run_dir):
    table = pd.read_csv(run_dir / TRAIN_SAMPLES, dtype=str)
    expected = [io.file_digest(path) for path in table["image_path"]]
    assert table[IMAGE_DIGEST].tolist() == expected
    assert training_images(run_dir).paths == frozenset()  # every row has its digest


def test_a_model_without_digests_is_matched_by_file_path(run_dir, tmp_path, monkeypatch):
    # train_samples.csv as models trained before the digests were recorded wrote it
    table = pd.read_csv(run_dir / TRAIN_SAMPLES, dtype=str)
    table.drop(columns=IMAGE_DIGEST).to_csv(run_dir / TRAIN_SAMPLES, index=False)
    copy = tmp_path / "lund_03.jpg"
    shutil.copyfile(PHOTOS / "lund_03.jpg", copy)
    trained = training_images(run_dir)
    assert trained.digests == frozenset() and len(trained.paths) == len(TRAINED)

    def no_hashing(path):
        raise AssertionError(f"{path} hashed for a model that has no digests to compare with")

    monkeypatch.setattr(runs, "file_digest", no_hashing)
    respelled = PHOTOS / ".." / PHOTOS.name / "lund_02.jpg"
    seen = seen_in_training(scored(respelled, copy, PHOTOS / "lund_04.jpg"), trained)
    assert seen.tolist() == [True, False, False]


def test_a_folder_without_its_training_table_has_seen_nothing(tmp_path):
    assert not seen_in_training(scored(PHOTOS / "lund_01.jpg"), training_images(tmp_path)).any()


def test_file_digest_reads_an_unchanged_file_once_and_a_changed_one_again(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "RECENT_NS", 0)  # remember files just written, as if they were old
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"first")
    first = io.file_digest(path)
    hits = io._remembered_digest.cache_info().hits
    assert io.file_digest(path) == first
    assert io._remembered_digest.cache_info().hits == hits + 1
    replacement = tmp_path / "new.jpg"  # the same size, moved into place: another inode
    replacement.write_bytes(b"other")
    os.replace(replacement, path)
    assert io.file_digest(path) != first


def test_file_digest_does_not_remember_a_file_changed_just_now(tmp_path):
    # edited in place within the file system's timestamp resolution, its status may not change
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"first")
    first = io.file_digest(path)
    path.write_bytes(b"other")
    assert io.file_digest(path) != first
