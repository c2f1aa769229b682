"""Shared test set-up: no network, bundled data paths, a per-session feature cache."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "resources" / "sample_data" / "photos"
SHARED_DATA = REPO.parent / "shared" / "data"


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any test that tries to reach beyond this machine (weights must come from packages)."""
    original = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "localhost", "::1")
            and "/" not in host
        ):
            raise NetworkAccessError(f"test tried to connect to {address!r}")
        return original(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = original


@pytest.fixture(autouse=True, scope="session")
def temp_folder_of_the_run(tmp_path_factory):
    """The run's temporary files, and those of the processes it starts (torchrun's
    ``torchelastic_*`` logs, multiprocessing's ``pymp-*``), go under pytest's own folder, which
    pytest prunes, instead of piling up in the machine's /tmp run after run."""
    folder = tmp_path_factory.mktemp("tmp")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield folder
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    """One on-disk feature cache for the whole run, so photos are encoded once."""
    return tmp_path_factory.mktemp("swclip-cache")


@pytest.fixture
def shared_data() -> Path:
    """The data folder beside a development checkout (../shared/data), absent in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (only the project's own machines have it)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The plugin's Processing provider, registered for the tests of one module (QGIS tests only:
    ``qgis_processing`` comes from pytest-qgis, and QGIS is imported here, not for every test)."""
    from qgis.core import QgsApplication

    from swclip_qgis.provider import SwclipProvider

    registry = QgsApplication.processingRegistry()
    provider = SwclipProvider()
    registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)
