"""The Speed section of results.md, from what benchmarks.speed measured."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from swclip_core.device import resolve_device, resolve_precision

# Side by side in every table; bfloat16 is emulated (and slower) on CPUs without it, which the
# rows then show. `auto` picks one of them (swclip_core.device.resolve_precision).
PRECISIONS = ("fp32", "bf16")


def table(header: str, align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table: the ``header`` and ``align`` lines, then one line per row of cells."""
    return [header, align, *("| " + " | ".join(cells) + " |" for cells in rows)]


def with_range(value: float, low: float, high: float, digits: int, range_digits: int) -> str:
    """A median with the range of the rounds in brackets: ``12.3 [11-14]``."""
    return f"{value:.{digits}f} [{low:.{range_digits}f}-{high:.{range_digits}f}]"


def precision_note(result: dict) -> str:
    auto = resolve_precision("auto", resolve_device("auto"))
    loads = ", ".join(f"{name} {a:.1f}-{b:.1f}" for name, (a, b) in result.get("load", {}).items())
    return (
        f"Measured on {result.get('date', '?')} (`make bench-speed`). fp32 and bf16 rows are "
        f"timed in the same rounds, alternating (median of rounds, the range in brackets); "
        f"`--precision auto` picks **{auto}** on this machine. Under bfloat16, swclip-lite's "
        "image trunk computes in float32 (its depthwise convolutions lose too much in bfloat16; "
        "README, Precision), so its bf16 feature rows time the same float32 trunk. The accuracy "
        "tables above were measured in float32, which stays the default on a CPU (`auto` is "
        "opt-in there); since they were measured, swclip-lite's trunk reads channels-last "
        "pixels, which gives the same float32 features (cosine 1 - 2e-7, the same nearest "
        "images), so they still describe the defaults. The machine "
        "was shared with other engineers' jobs: 1-minute load average (2 cores) at the start and "
        f"end of each part: {loads}."
    )


def feature_lines(result: dict) -> list[str]:
    fe = result["feature_extraction"]
    first = next(iter(fe.values()))["fp32"]
    lines = [
        "### Feature extraction (swclip-lite image trunk, batch 32)",
        "",
        f"Images decoded in {first['decode_workers']} worker processes (0: in the main process, "
        "the default on a CPU, where the forward pass already uses every core; see "
        "swclip_core.features.decode_workers), uint8 pixels normalised per batch. The pipeline "
        "and the trunk's bare forward on as many random images alternate in "
        f"{first['rounds']} rounds; the ratio is taken within each round. The next batch decodes "
        "in a thread while the forward pass runs (swclip_core.features.prefetched), but the "
        f"forward pass already keeps the {first.get('cores', '?')} cores busy, so decoding's CPU "
        "time (timed alone in the same rounds, one thread) adds to it: the ratio cannot exceed "
        "bare / (bare + decode / cores), the ceiling column. Decoding the photos costs what "
        "their JPEGs' entropy coding costs, even at 1/8 scale (five 5760x2880 panoramas).",
        "",
    ]
    return lines + table(
        "| data | precision | images | pipeline images/s | bare forward images/s | "
        "decoding alone images/s | ratio (target >= 0.90) | ceiling on these cores |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        (
            [
                name,
                precision,
                str(row["images"]),
                f"{row['pipeline_images_per_s']:.1f}",
                f"{row['bare_forward_images_per_s']:.1f}",
                f"{row['decode_images_per_s']:.1f}" if "decode_images_per_s" in row else "-",
                with_range(row["ratio"], row["ratio_min"], row["ratio_max"], 2, 2),
                f"{row['ceiling']:.2f}" if "ceiling" in row else "-",
            ]
            for name, rows in fe.items()
            for precision, row in rows.items()
        ),
    )


def training_lines(result: dict) -> list[str]:
    def speed(row: dict) -> str:
        return with_range(row["samples_per_s"], row["min"], row["max"], 1, 0)

    return [
        "### Training throughput (cached features, samples/s)",
        "",
        *table(
            "| objective | fp32 | bf16 | bf16/fp32 |",
            "| --- | ---: | ---: | ---: |",
            (
                [
                    objective,
                    speed(rows["fp32"]),
                    speed(rows["bf16"]),
                    f"{rows['bf16']['samples_per_s'] / rows['fp32']['samples_per_s']:.2f}",
                ]
                for objective, rows in result["training"].items()
            ),
        ),
    ]


def gallery_lines(result: dict) -> list[str]:
    g = result["gallery_embedding"]
    return [
        f"### Gallery embedding (swclip-lite text tower, {g['fp32']['captions']:,} captions)",
        "",
        *table(
            "| precision | captions/s |",
            "| --- | ---: |",
            (
                [p, with_range(row["captions_per_s"], row["min"], row["max"], 0, 0)]
                for p, row in g.items()
            ),
        ),
    ]


def retrieval_lines(result: dict) -> list[str]:
    lines = [
        "### Gallery retrieval (dim 256, top-5; target <= 1.2x best bare)",
        "",
        "Ours and the bare matmul are timed in turns (median of 7 rounds, 2 for the last row), "
        "faiss after them (its idle OpenMP threads slowed whatever ran next). Ours scores at "
        "most `MAX_BLOCK_BYTES` (256 MiB) of similarities at a time; the bare matmul holds the "
        "whole (queries, gallery) matrix. Float32 only: the gallery is stored in float32."
        + (
            ""
            if "retrieval" in result.get("load", {})
            else " These rows were carried over from the previous full `make bench` run "
            "(same code); a fresh `--work` folder measures them again."
        ),
        "",
    ]
    return lines + table(
        "| gallery | queries | ours ms/query | matmul ms/query | faiss ms/query | ours/best | "
        "ours extra RSS MB | matmul extra RSS MB | gallery MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        (
            [
                f"{r['gallery']:,}",
                f"{r['queries']:,}",
                f"{r['ours_ms_per_query']:.3f}",
                f"{r['matmul_ms_per_query']:.3f}",
                f"{r.get('faiss_ms_per_query', float('nan')):.3f}",
                f"{r['ours_vs_best_bare']:.2f}",
                f"{r['ours_extra_rss_mb']:.0f}",
                f"{r['matmul_extra_rss_mb']:.0f}",
                f"{r['gallery_mb']:.0f}",
            ]
            for r in result["retrieval"]
        ),
    )


def geoclip_lines(result: dict) -> list[str]:
    g = result["geoclip"]
    auto = g["auto"]
    lines = [
        f"### Per-image localization on GeoCLIP's {g['gallery']:,}-location gallery",
        "",
        f"A layer of {g['images']} photos (the first bundled ones), decoded at the model's "
        f"input size and encoded in batches of {g['batch_size']}, against the gallery encoded once "
        f"({g['gallery_encoding_once_s']:.1f} s); seconds per image = the layer's time / "
        f"{g['images']} (median of {g['rounds']} rounds, precisions alternating).",
        "",
    ]
    official = [
        "official geoclip `predict` (one image per call, re-encodes the gallery; one call timed "
        "after a warm-up)",
        "fp32",
        f"{g['official_predict_s']:.2f}",
        "1.0x",
    ]
    lines += table(
        "| pipeline | precision | seconds per image | speed-up vs official (target >= 100x) |",
        "| --- | --- | ---: | ---: |",
        [
            official,
            *(
                [
                    label,
                    f"{precision} (auto)" if precision == auto else precision,
                    f"{g[f'{name}_{precision}_s']:.3f}",
                    f"{g[f'{name}_{precision}_speedup']:.1f}x",
                ]
                for name, label in (
                    ("same_encoders", "same encoders (ViT-L/14 + MLP), cached gallery"),
                    ("swclip_lite", "swclip-lite image encoder, cached gallery"),
                )
                for precision in PRECISIONS
            ),
        ],
    )
    if "bound_speedup" in g:
        rates = g["matmul_gflops"]
        lines += [
            "",
            f"**The ceiling on this CPU.** ViT-L/14's forward is {g['vit_gflop_per_image']:.0f} "
            "GFLOP an image (patch embedding, attention and MLP of its 24 layers). This CPU's "
            f"matmul rate at the shape of its MLP is {rates['fp32']:.0f} GFLOP/s in float32 and "
            f"{rates['bf16']:.0f} in bfloat16 (median of 5), so the forward alone takes at least "
            f"{g['bound_s_per_image']:.3f} s an image and no pipeline with these encoders can "
            f"run more than {g['bound_speedup']:.0f}x faster than the official predict here; "
            f"ours reaches {g[f'same_encoders_{auto}_speedup'] / g['bound_speedup']:.0%} of that "
            "bound. The 100x target needs a faster matrix unit than this one (a GPU, or a "
            "CPU with AMX), which this machine does not have.",
        ]
    lines += [
        "",
        "GeoCLIP's CLIP ViT-L/14 weights live on a model hub that this machine cannot reach: "
        "the official class ran with its exact architecture and random CLIP weights "
        "(identical cost); its location encoder, image MLP and gallery are the official "
        "ones from the geoclip package.",
    ]
    return lines


PARTS = {
    "feature_extraction": feature_lines,
    "training": training_lines,
    "gallery_embedding": gallery_lines,
    "retrieval": retrieval_lines,
    "geoclip": geoclip_lines,
}


def summarise_speed(result: dict) -> list[str]:
    """Markdown lines for results.md's Speed section (a part not measured yet is named)."""
    lines = [precision_note(result)]
    for name, part_lines in PARTS.items():
        lines += ["", *(part_lines(result) if name in result else [f"{name}: not measured yet."])]
    return lines


def replace_section(markdown: str, heading: str, lines: list[str]) -> str:
    """``markdown`` with the body of its ``## heading`` section (to the next ``## ``) replaced."""
    before, marker, rest = markdown.partition(f"\n## {heading}\n")
    if not marker:
        return markdown.rstrip("\n") + f"\n\n## {heading}\n\n" + "\n".join(lines) + "\n"
    _, next_heading, after = rest.partition("\n## ")
    body = "\n".join(["", *lines, ""])
    return before + marker + body + (next_heading + after if next_heading else "")
