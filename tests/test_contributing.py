"""CONTRIBUTING.md's worked example works: its new objective module and its registry line are all
that a new objective needs to be trained, loaded and evaluated, from the library and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from swclip_core import api
from swclip_core.cli import main
from swclip_core.config import TrainConfig
from swclip_core.objectives.registry import REGISTRY, Listing

from .conftest import PHOTOS, REPO


def example_blocks() -> list[str]:
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture
def one_way_clip(tmp_path, monkeypatch):
    """The example's module written where Python finds it, and its registry line added."""
    module, line = example_blocks()
    package = tmp_path / "contrib"
    package.mkdir()
    (package / "one_way_clip.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    # The registry line as written, pointed at where the test put the module.
    entry = eval(
        "{" + line.replace("swclip_core.objectives.one_way_clip", "contrib.one_way_clip") + "}",
        {"Listing": Listing},
    )
    for name, listing in entry.items():
        monkeypatch.setitem(REGISTRY, name, listing)
    return next(iter(entry))


@pytest.mark.slow
def test_the_worked_example_trains_loads_and_localizes(one_way_clip, tmp_path, feature_cache):
    assert one_way_clip == "one-way-clip"
    photos = api.read_samples(PHOTOS)
    config = TrainConfig(
        objective=one_way_clip, epochs=2, batch_size=16, device="cpu", num_workers=0
    )
    result = api.train(photos, config, tmp_path / "run", cache_dir=feature_cache)
    assert result.epochs == 2 and np.isfinite(result.final_loss)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in logged] == [1, 2]
    assert all(np.isfinite(r["one_way_infonce"]) for r in logged)

    model = api.load_model(tmp_path / "run", "cpu")
    assert model.config.objective == one_way_clip and model.fingerprint
    evaluation = api.evaluate(photos, model, cache_dir=feature_cache)
    assert np.isfinite(evaluation.summary["median_error_m"])
    assert 0.0 <= evaluation.summary["r_at_1"] <= 1.0


@pytest.mark.slow
def test_the_command_line_offers_the_new_objective(one_way_clip, tmp_path, feature_cache, capsys):
    run = tmp_path / "cli-run"
    args = ["train", str(PHOTOS), "--out", str(run), "--objective", one_way_clip]
    code = main([*args, "--epochs", "1", "--batch-size", "16", "--cache-dir", str(feature_cache)])
    assert code == 0
    assert json.loads((run / "config.json").read_text())["objective"] == one_way_clip
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = "".join(capsys.readouterr().out.split())  # argparse wraps the help anywhere
    assert "one-way-clip:InfoNCEfromimagestocaptionsonly" in shown


def test_an_objective_that_is_not_distributed_refuses_torchrun(one_way_clip, tmp_path, monkeypatch):
    """An objective whose ``fit`` cannot run data-parallel says ``distributed = False`` (the
    example inherits True from the caption objectives); under torchrun (world size 2 here, as
    run_settings would report it) it refuses in one line before the run folder is written."""
    from swclip_core import distributed
    from swclip_core.errors import InputError
    from swclip_core.objectives.registry import get_objective

    monkeypatch.setattr(type(get_objective(one_way_clip)), "distributed", False)
    monkeypatch.setattr(
        distributed,
        "run_settings",
        lambda device: {"world_size": 2, "backend": "gloo", "rank_devices": "cpu,cpu"},
    )
    config = TrainConfig(objective=one_way_clip, epochs=1, device="cpu", num_workers=0)
    with pytest.raises(InputError, match=r"one process only.*without torchrun"):
        api.train(api.read_samples(PHOTOS), config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
