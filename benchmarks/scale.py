"""`make bench` "Scale": training on 1 and 2 processes, localize memory, and gallery search with
faiss indexes against exact search, at large sizes.

Resumable: every figure is kept in ``<work>/scale-*.json`` as soon as it is measured, and a rerun
measures only what is missing (``python -m benchmarks.scale --work DIR --sizes ...``).

Galleries are real caption embeddings combined (tests/test_gallery_index.py does the same at
10^5): 200 captions of the bundled real places are embedded by swclip-lite, and every entry is the
normalised mix w·a + (1 - w)·b of two of them; queries are 100 further real captions. Entries are
stored as a float16 memory map on disk (10^7 × 256 float32 would be 10 GB), written in blocks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from swclip_core import gallery_index
from swclip_core.retrieval import streamed_top_k

from .speed import PeakRss

K = 5


def caption_embeddings(work: Path) -> torch.Tensor:
    """300 real place captions embedded by swclip-lite (cached in ``work``)."""
    path = work / "scale-captions.pt"
    if path.exists():
        return torch.load(path)
    from swclip_core.captions import captions_for
    from swclip_core.models import create_backbone
    from swclip_core.retrieval import embed_captions
    from tests.test_gallery_index import real_places

    places = real_places()
    rng = np.random.default_rng(0)
    picked = places.iloc[rng.choice(len(places), 300, replace=False)].reset_index(drop=True)
    cpu = torch.device("cpu")
    backbone = create_backbone("swclip-lite", device=cpu)
    embedded = embed_captions(backbone, captions_for(picked), device=cpu)
    torch.save(embedded, path)
    return embedded


def gallery_file(work: Path, size: int, base: torch.Tensor) -> np.ndarray:
    """A float16 (size, D) memory map of mixed caption embeddings, written block by block."""
    path = work / f"scale-gallery-{size}.npy"
    if not path.exists():
        rng = np.random.default_rng(size)
        tmp = path.with_suffix(".partial.npy")
        store = np.lib.format.open_memmap(tmp, "w+", np.float16, (size, base.shape[1]))
        for start in range(0, size, 1 << 20):
            n = min(1 << 20, size - start)
            pairs = torch.from_numpy(rng.integers(0, len(base), (n, 2)))
            mix = torch.from_numpy(rng.uniform(0, 1, (n, 1))).float()
            block = F.normalize(mix * base[pairs[:, 0]] + (1 - mix) * base[pairs[:, 1]], dim=1)
            store[start : start + n] = block.numpy().astype(np.float16)
        store.flush()
        del store
        tmp.replace(path)
    return np.load(path, mmap_mode="r")


def index_row(
    work: Path,
    gallery: np.ndarray,
    queries: torch.Tensor,
    warm_up: torch.Tensor,
    kind: str,
    exact_rows,
) -> dict:
    """Build time, extra memory, ms/query and recall@5 against exact search of one index kind.

    The index is kept in ``work`` under the name `swclip` gives it (which names its build
    settings), with its build figures beside it: a rerun that changes only how the index is
    searched measures the search again without a build of up to hours at 10^7 entries."""
    built_file = gallery_index.index_file(work / f"scale-gallery-{len(gallery)}.npy", kind)
    build_record = built_file.with_suffix(".json")
    if built_file.exists() and build_record.exists():
        index = gallery_index.open_index(gallery, kind, built_file)
    else:
        with PeakRss() as memory:
            start = time.perf_counter()
            index = gallery_index.open_index(gallery, kind, built_file)
            build_s = time.perf_counter() - start
        build = {
            "build_s": build_s,
            "build_extra_rss_mb": memory.extra / 2**20,
            "build_threads": torch.get_num_threads(),
        }
        build_record.write_text(json.dumps(build))
    # Untimed, other queries first: the first search after opening pages the graph and the
    # gallery's vectors in from disk, once per process, not once per query.
    index.search(warm_up, K)
    row = {
        **json.loads(build_record.read_text()),
        **_searched(index, queries, exact_rows),
        "threads": torch.get_num_threads(),
    }
    if kind == "hnsw":  # the same graph searched with a beam twice as wide: what recall costs
        row["settings"] = _hnsw_settings(index.index)
        index.index.hnsw.efSearch *= 2
        row["wider"] = {
            "settings": _hnsw_settings(index.index),
            **_searched(index, queries, exact_rows),
        }
    return row


def _searched(index, queries: torch.Tensor, exact_rows) -> dict:
    start = time.perf_counter()
    _, rows = index.search(queries, K)
    search_s = time.perf_counter() - start
    recall = np.mean(
        [len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(rows, exact_rows, strict=True)]
    )
    return {"ms_per_query": 1000 * search_s / len(queries), "recall_at_5": float(recall)}


def _hnsw_settings(index) -> str:
    graph = index.hnsw
    return f"efConstruction {graph.efConstruction}, efSearch {graph.efSearch}"


def photo_model(work: Path) -> Path:
    """A model trained for one epoch on the bundled photos (the network's size is what counts)."""
    from swclip_core.cli import main as swclip

    run = work / "scale-model"
    if not (run / "checkpoint.pt").exists():
        photos = Path(__file__).resolve().parent.parent / "resources" / "sample_data" / "photos"
        command = ["train", str(photos), "--out", str(run), "--epochs", "1"]
        assert swclip([*command, "--cache-dir", str(work / "cache")]) == 0
    return run


def point_layer(work: Path, size: int) -> Path:
    """A CSV of ``size`` points spread over Great Britain, each pointing at one of 16 small
    photos (so that decoding costs little and memory, not image work, is what is measured)."""
    from PIL import Image

    path = work / f"scale-layer-{size}.csv"
    images = [work / "scale-photos" / f"p{i}.jpg" for i in range(16)]
    if not all(image.exists() for image in images):  # the same 16 photos for every layer
        pixels = np.random.default_rng(0).integers(0, 255, (16, 48, 64, 3), dtype=np.uint8)
        images[0].parent.mkdir(parents=True, exist_ok=True)
        for image, array in zip(images, pixels, strict=True):
            Image.fromarray(array).save(image)
    if not path.exists():
        import pandas as pd

        rng = np.random.default_rng(size)
        table = pd.DataFrame(
            {
                "image": np.array([str(i) for i in images])[rng.integers(0, 16, size)],
                "lat": rng.uniform(50.0, 58.0, size),
                "lon": rng.uniform(-5.0, 1.0, size),
            }
        )
        table.to_csv(path.with_suffix(".partial.csv"), index=False)
        path.with_suffix(".partial.csv").replace(path)
    return path


def localize_rss(work: Path, size: int) -> dict:
    """Peak resident memory and time of `swclip predict` on a layer of ``size`` points, in a
    process of its own (its peak is that process's own ru_maxrss)."""
    import subprocess
    import sys

    model, layer = photo_model(work), point_layer(work, size)
    out = work / f"scale-pred-{size}.gpkg"
    code = (
        "import resource, sys\n"
        "from swclip_core.cli import main\n"
        f"code = main(['predict', {str(layer)!r}, '--model', {str(model)!r}, "
        f"'--out', {str(out)!r}, '--cache-dir', {str(work / 'cache')!r}])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    out.unlink()
    return {
        "points": size,
        "peak_rss_mb": int(result.stdout.strip().splitlines()[-1]) / 1024,
        "seconds": seconds,
        "threads": torch.get_num_threads(),  # the child inherits OMP_NUM_THREADS
    }


# Training on several processes: the bundled photos, one global batch and seed for every run.
TRAIN_EPOCHS = 20
TRAIN_BATCH = 16
TRAIN_ROUNDS = 3  # the runs alternate, round after round: the load of a shared machine varies
# What is compared: one process with torch's threads on every core (how `swclip train` runs),
# one process on one thread (the thread budget of each torchrun process), two torchrun processes.
TRAIN_SETUPS = {
    "1": {"processes": 1, "threads": None},
    "1-thread": {"processes": 1, "threads": 1},
    "2": {"processes": 2, "threads": 1},
}


def train_run(work: Path, setup: dict, out: Path, epochs: int) -> float:
    """`swclip train` (cached mode) on the bundled photos as ``setup`` says (torchrun beyond one
    process, in its module form); the wall time in seconds."""
    import os
    import shutil
    import subprocess
    import sys

    photos = Path(__file__).resolve().parent.parent / "resources" / "sample_data" / "photos"
    shutil.rmtree(out, ignore_errors=True)  # an interrupted run starts again
    command = ["-m", "swclip_core.cli", "train", str(photos), "--out", str(out)]
    command += ["--epochs", str(epochs), "--batch-size", str(TRAIN_BATCH), "--seed", "0"]
    command += ["--cache-dir", str(work / "cache")]
    if setup["processes"] > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc-per-node={setup['processes']}", *command]
    env = dict(os.environ)
    if setup["threads"] is not None:
        env["OMP_NUM_THREADS"] = str(setup["threads"])
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - start


def measure_training(work: Path, rounds: int = TRAIN_ROUNDS) -> dict:
    """Training samples/s of each of :data:`TRAIN_SETUPS` with the same global batch and seed,
    the feature cache warm (a first 1-epoch run fills it), so that the epochs alone compare;
    ``rounds`` runs of each, alternating. Each run's figure is the mean over its epochs 2 on."""
    results_path = work / "scale-training.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if any(len(results.get(key, {}).get("runs", [])) < rounds for key in TRAIN_SETUPS):
        train_run(work, TRAIN_SETUPS["1"], work / "scale-train-warm", 1)
    for _ in range(rounds):
        for key, setup in TRAIN_SETUPS.items():
            row = results.setdefault(key, {**setup, "global_batch": TRAIN_BATCH, "runs": []})
            if len(row["runs"]) >= rounds:
                continue
            out = work / f"scale-train-{key}"
            seconds = train_run(work, setup, out, TRAIN_EPOCHS)
            lines = (out / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            steady = [r["samples_per_s"] for r in records[1:]]  # the first epoch warms up
            row["runs"].append(
                {
                    "samples_per_s": float(np.mean(steady)),
                    "wall_s": seconds,
                    "final_loss": records[-1]["loss"],
                    "backend": records[-1].get("backend"),
                }
            )
            results_path.write_text(json.dumps(results, indent=1))
            print("training", key, row["runs"][-1], flush=True)
    return results


def measure_localize(work: Path, sizes: list[int]) -> dict:
    """:func:`localize_rss` of each size, after a first run that puts the 16 photos' features in
    the cache (a cold cache would add image work, not memory of the layer, to the first size)."""
    results_path = work / "scale-localize.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if sizes and any(str(size) not in results for size in sizes):
        localize_rss(work, 16)
    for size in sizes:
        if str(size) not in results:
            results[str(size)] = localize_rss(work, size)
            results_path.write_text(json.dumps(results, indent=1))
            print("localize", results[str(size)], flush=True)
    return results


def measure(work: Path, sizes: list[int], kinds: list[str]) -> dict:
    results_path = work / "scale-index.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not sizes:
        return results
    embedded = caption_embeddings(work)
    base, queries = embedded[:200], embedded[200:]
    for size in sizes:
        row = results.setdefault(str(size), {"entries": size, "dim": base.shape[1]})
        gallery = gallery_file(work, size, base)
        exact_file = work / f"scale-exact-{size}.npy"
        if "exact" not in row or not exact_file.exists():
            with PeakRss() as memory:
                start = time.perf_counter()
                _, exact_rows = streamed_top_k(queries, gallery, K)
                exact_s = time.perf_counter() - start
            np.save(exact_file, exact_rows.numpy())
            row["exact"] = {
                "ms_per_query": 1000 * exact_s / len(queries),
                "extra_rss_mb": memory.extra / 2**20,
                "threads": torch.get_num_threads(),
            }
        exact_rows = torch.from_numpy(np.load(exact_file))
        for kind in kinds:
            if kind not in row:
                row[kind] = index_row(work, gallery, queries, base, kind, exact_rows)
                results_path.write_text(json.dumps(results, indent=1))
                print(size, kind, row[kind], flush=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(size, "exact", row["exact"], flush=True)
    return results


def report(work: Path, out: Path) -> Path:
    """``out/scale.md`` and ``out/scale.json`` from what has been measured in ``work``."""
    from .run import machine

    # the work folder's files are scale-*.json: `--out` may be the work folder itself
    stored = work / "scale-index.json"
    index = json.loads(stored.read_text()) if stored.exists() else {}
    local = work / "scale-localize.json"
    localize = json.loads(local.read_text()) if local.exists() else {}
    trained = work / "scale-training.json"
    training = json.loads(trained.read_text()) if trained.exists() else {}
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "index": index}
    payload["localize"] = localize
    payload["training"] = training
    (out / "scale.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        "# Scale",
        "",
        f"Made by `python -m benchmarks.scale` (part of `make bench`, resumable) on "
        f"{payload['date']}; machine: {payload['machine']}, shared with other jobs while it ran, "
        "so times are upper bounds.",
        "",
        "## Training on several processes",
        "",
        f"`swclip train` (swclip, cached mode) on the 41 bundled photos, global batch "
        f"{TRAIN_BATCH}, seed 0, {TRAIN_EPOCHS} epochs, the image features already cached: one "
        "process with torch's threads on both cores (how `swclip train` runs), one process on one "
        "thread, and `torchrun --standalone --nproc-per-node 2` (gloo, one thread per process, "
        f"torchrun's default); {TRAIN_ROUNDS} runs of each, alternating. Samples/s is the mean "
        "of epochs 2 on (metrics.jsonl), the median over the runs with their range; wall time "
        "(median) includes start-up. On this 2-core machine the honest expectation is about "
        "flat: two processes share the two cores one process already uses, and add a gather and "
        "an all-reduce per step; the gain comes with more cores, nodes or GPUs. When other jobs "
        "load the machine, the one process on two threads slows most (its threads wait for each "
        "other whenever one of them loses its core), so read 2 processes against the one "
        "process on one thread too. The final losses show the same training in every run.",
        "",
        "| run | processes x threads | global batch | samples/s | range | wall (s) | final loss |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for key, row in training.items():
        runs = row["runs"]
        rates = [r["samples_per_s"] for r in runs]
        threads = row["threads"] or "all"
        lines.append(
            f"| {key} | {row['processes']} x {threads} | {row['global_batch']} | "
            f"{np.median(rates):.0f} | {min(rates):.0f}-{max(rates):.0f} | "
            f"{np.median([r['wall_s'] for r in runs]):.0f} | {runs[-1]['final_loss']:.4f} |"
        )
    if "1" in training and "2" in training:

        def rate(key: str) -> float:
            return float(np.median([r["samples_per_s"] for r in training[key]["runs"]]))

        lines += [
            "",
            f"2 processes / 1 process: {rate('2') / rate('1'):.2f}x samples/s"
            + (
                f"; 2 processes / 1 process on one thread: {rate('2') / rate('1-thread'):.2f}x."
                if "1-thread" in training
                else "."
            ),
        ]
    else:
        lines += ["", "Not measured in this run: training on 1 and 2 processes."]
    lines += [
        "",
        "## Localizing a layer: peak memory",
        "",
        "`swclip predict` on CSV layers of N points (each pointing at one of 16 small photos, so "
        "that image work stays small and memory is what is measured), a model trained one epoch "
        "on the bundled photos, its 41 training places as the gallery; peak resident memory of "
        "the whole process (ru_maxrss), read in chunks of 20,000 records.",
        "",
        "| points | peak RSS (MB) | vs 10^4 | time (s) | threads |",
        "|---:|---:|---:|---:|---:|",
    ]
    reference = localize.get(str(10**4), {}).get("peak_rss_mb")
    for key in sorted(localize, key=int):
        row = localize[key]
        ratio = f"{row['peak_rss_mb'] / reference:.2f}" if reference else "n/a"
        lines.append(
            f"| {int(key):,} | {row['peak_rss_mb']:,.0f} | {ratio} | {row['seconds']:,.0f} "
            f"| {row.get('threads', '?')} |"
        )
    above = [row["peak_rss_mb"] for key, row in localize.items() if int(key) >= 10**4]
    if reference and len(above) > 1:
        lines += [
            "",
            f"From 10^4 points on, the peak is at most {max(above) / reference:.2f}x the 10^4 "
            "peak (target: within 1.5x).",
        ]
    missing = [f"{n:,}" for n in (10**3, 10**4, 10**5, 10**6) if str(n) not in localize]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)} points."]
    lines += [
        "",
        "## Gallery search: faiss indexes against exact search",
        "",
        __doc__.split("\n\n")[2].replace("\n", " "),
        "Exact search streams the memory map in blocks (`retrieval.streamed_top_k`); ivf and "
        "hnsw are `gallery_index` (float16 codes, top-K re-scored exactly); hnsw searches with "
        "the beam `gallery_index.hnsw_ef_search` gives a gallery of that size, then with twice "
        "that on the same graph. Each index is searched once with the 200 source captions, "
        "untimed, before it is timed (the first search after opening an index reads the graph "
        "and vectors in from disk, once per process). Recall@5 is the share "
        "of the exact top-5 found; memory is the resident memory added while building, which "
        "counts the gallery's memory-mapped pages read meanwhile (up to its 5 GB at 10^7 "
        "entries; the kernel can drop them).",
        "",
        "| entries | search | ms/query | recall@5 (target >= 0.95) | build (s) | memory (MB) "
        "| threads |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(index, key=int):
        row = index[key]
        exact = row.get("exact", {})
        if exact:
            lines.append(
                f"| {int(key):,} | exact | {exact['ms_per_query']:.1f} | 1 | - | "
                f"{exact['extra_rss_mb']:,.0f} | {exact.get('threads', '?')} |"
            )
        for kind in ("ivf", "hnsw"):
            if kind in row:
                r = row[kind]
                build = f"{r['build_s']:,.0f} | {r['build_extra_rss_mb']:,.0f}"
                searches = [(r, build)]
                if "wider" in r:  # the same graph searched with a wider beam
                    searches.append((r["wider"], "same graph | -"))
                for search, built in searches:
                    label = f"{kind} ({search['settings']})" if "settings" in search else kind
                    lines.append(
                        f"| {int(key):,} | {label} | {search['ms_per_query']:.1f} | "
                        f"{search['recall_at_5']:.3f} | {built} | {_threads(r)} |"
                    )
    not_measured = []
    for n in (10**6, 10**7):
        for kind in ("exact", "ivf", "hnsw"):
            if kind not in index.get(str(n), {}):
                smaller = index.get(str(n // 10), {}).get(kind, {})
                basis = (
                    f" (its build took {smaller['build_s']:,.0f} s at {n // 10:,} entries; at "
                    f"{n:,}, ten times that or more)"
                    if "build_s" in smaller
                    else ""
                )
                not_measured.append(f"{kind} at {n:,}{basis}")
    if not_measured:
        lines += ["", f"Not measured in this run: {', '.join(not_measured)}."]
    path = out / "scale.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _threads(row: dict) -> str:
    """The threads column of an index row: one figure, or the build's and the search's."""
    search, build = row.get("threads", "?"), row.get("build_threads", row.get("threads", "?"))
    return f"{search}" if build == search else f"{build} to build, {search} to search"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (resumable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10**5, 10**6, 10**7])
    parser.add_argument("--kinds", nargs="+", default=["ivf", "hnsw"])
    parser.add_argument("--points", type=int, nargs="*", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--rounds", type=int, default=TRAIN_ROUNDS, help="training runs of each")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    measure_training(args.work, args.rounds)
    measure_localize(args.work, args.points)
    measure(args.work, args.sizes, args.kinds)
    print(f"wrote {report(args.work, args.out)}")


if __name__ == "__main__":
    main()
