"""Measuring some rows of the benchmark again (benchmarks/run.py, `--section table1`): the other
records and results.md sections stay as they were, and results.md says what was measured when."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks import run


def record(objective: str, seed: int, error: float, **extra) -> dict:
    return {
        "dataset": "toy",
        "split": "random",
        "seed": seed,
        "objective": objective,
        "protocol": "closed",
        "method": "mode",
        **dict.fromkeys(run.accuracy.FIGURES, 0.5),
        "median_error_m": error,
        **extra,
    }


def sweep_rows(variant: str, error: float) -> list[dict]:
    return [
        {**record("swclip", 0, error, protocol=protocol), "variant": variant}
        for protocol in ("closed", "open")
    ]


def test_merged_replaces_records_where_they_stood():
    earlier = [record("clip", 0, 1.0), record("swclip", 0, 2.0), record("geoclip", 0, 3.0)]
    fresh = [record("swclip", 0, 20.0), record("swclip", 1, 21.0)]
    got = run.merged(earlier, fresh)
    assert [(r["objective"], r["seed"], r["median_error_m"]) for r in got] == [
        ("clip", 0, 1.0),
        ("swclip", 0, 20.0),
        ("geoclip", 0, 3.0),
        ("swclip", 1, 21.0),
    ]
    assert earlier[1]["median_error_m"] == 2.0  # the inputs are not modified


def test_table1_rows_measured_again_keep_the_others(tmp_path, monkeypatch):
    markdown = "\n".join(
        [
            "# SW-CLIP benchmarks",
            "",
            "Made by `make bench` (full run) on 2026-11-22 in 87 min.",
            "",
            "## Data",
            "",
            "kept data text",
            "",
            run.SETTINGS_HEADING,
            "",
            "old settings",
            "",
            run.TABLE1_HEADING,
            "",
            "old table",
            "",
            "## Speed",
            "",
            "kept speed text",
            "",
            f"{run.SWEEP_HEADING} (random split, median error mean ± sd over seeds [0])",
            "",
            "old sweep",
            "",
            run.ENCODERS_HEADING,
            "",
            "kept encoders text",
            "",
        ]
    )
    (tmp_path / "results.md").write_text(markdown)
    payload = {
        "records": [record("clip", 0, 1.0), record("swclip", 0, 2.0)],
        "methods": [record("swclip", 0, 2.0, protocol="open")],
        "sweep": [
            *sweep_rows("scale_m=25", 6.0),
            *sweep_rows("defaults (automatic scale, no cutoff)", 5.0),
        ],
        "speed": {"kept": True},
    }
    (tmp_path / "results.json").write_text(json.dumps(payload))
    # "new-scene" joined the bench after the tables were measured: a full run measures it
    benched = [SimpleNamespace(name="toy"), SimpleNamespace(name="new-scene")]
    monkeypatch.setattr(run, "build_datasets", lambda work, quick: benched)
    measured_on = set()

    def run_accuracy(data, work, *, seeds, objectives, protocols=None, methods=None, base=None):
        measured_on.update(d.name for d in data)
        protocol = "open" if protocols == ("open",) else "closed"
        return iter([record(o, 0, 9.0, protocol=protocol) for o in objectives])

    def sweep(datasets, work, defaults, seeds, only):
        return [row for label in only for row in sweep_rows(label, 7.0)]

    monkeypatch.setattr(run.accuracy, "run_accuracy", run_accuracy)
    monkeypatch.setattr(run.sweep, "sweep", sweep)
    monkeypatch.setattr(run.report, "plot_errors", lambda summary, name, path: path)
    monkeypatch.setattr(run.report, "verdicts", lambda summary: ["new verdicts"])
    monkeypatch.setattr(run, "machine", lambda: "test machine")

    run.only_table1(tmp_path, tmp_path / "work", (0,), ("swclip",))

    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(r["objective"], r["median_error_m"]) for r in saved["records"]] == [
        ("clip", 1.0),
        ("swclip", 9.0),
    ]
    assert [r["median_error_m"] for r in saved["methods"]] == [9.0]
    errors = {r["variant"]: r["median_error_m"] for r in saved["sweep"]}
    assert errors["scale_m=25"] == 6.0 and errors["defaults (automatic scale, no cutoff)"] == 7.0
    assert saved["speed"] == {"kept": True}
    [again] = saved["measured_again"]
    assert again["rows"] == ["swclip"] and "defaults, 30 epochs" in again["sweep"]
    text = (tmp_path / "results.md").read_text()
    for kept in ("kept data text", "kept speed text", "kept encoders text", "in 87 min."):
        assert kept in text
    for replaced in ("old settings", "old table", "old sweep"):
        assert replaced not in text
    assert "new verdicts" in text and "| swclip | 9" in text
    assert measured_on == {"toy"} and "### new-scene" not in text
    assert "before the objectives `zero-shot`" in text and "the data set new-scene" in text
    assert text.count(run.AGAIN) == 1 and "rows swclip of Table 1" in text
    # a second run adds its sentence instead of repeating the first
    run.only_table1(tmp_path, tmp_path / "work", (0,), ("swclip",))
    assert (tmp_path / "results.md").read_text().count(run.AGAIN) == 2


def test_table1_refuses_rows_or_seeds_it_does_not_have(tmp_path):
    with pytest.raises(SystemExit, match="not rows of Table 1"):
        run.only_table1(tmp_path, tmp_path, (0,), ("swclip", "nonsense"))
    (tmp_path / "results.json").write_text(json.dumps({"records": [record("swclip", 0, 1.0)]}))
    with pytest.raises(SystemExit, match=r"seeds \[0\]"):
        run.only_table1(tmp_path, tmp_path, (0, 1), ("swclip",))


def test_the_encoders_section_says_which_rows_were_measured_when_and_where():
    one_day = [record("clip", 0, 1.0, measured="2026-11-29", machine="A")]
    assert run.when(one_day) == "2026-11-29 on A"
    two_days = [*one_day, record("swclip", 0, 2.0, measured="2026-11-30", machine="A")]
    assert run.when(two_days) == "2026-11-29 (clip); 2026-11-30 (swclip) on A"
    elsewhere = [*two_days, record("swclip+knn", 0, 2.0, measured="2026-11-30", machine="B")]
    assert run.when(elsewhere) == (
        "2026-11-29 (clip) on A; 2026-11-30 (swclip) on A; 2026-11-30 (swclip+knn) on B"
    )
