"""Configuration dataclasses, saved as JSON next to every checkpoint and output.

Any result can be reproduced from its folder: ``TrainConfig.load(run_dir / "config.json")``
gives the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, ModelError
from .io import write_json
from .objectives.registry import REGISTRY

MODES = ("cached", "finetune")
KERNELS = ("exponential", "gaussian")
HYBRID_COMBINES = ("sum", "concat")  # models.hybrid: how captions and GPS are combined
# How retrieval turns the top-K into a coordinate (swclip_core.retrieval).
# The first is the default: in `make bench` ``mode`` cut ``weighted``'s median error sharply where
# candidates sit in far-apart towns and was within one seed's spread of it elsewhere
# (benchmarks/results.md, "Prediction methods").
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # see device.resolve_precision
METHODS = ("mode", "weighted", "top1")
MODE_RADIUS_M = 5_000.0  # about a town: candidates closer than this count as one place
DEFAULT_METHOD = METHODS[0]
# The image-kNN objective's softmax temperature over the cosine similarities of frozen image
# features (its own and --knn-temperature's default).
KNN_TEMPERATURE = 0.05
# How a gallery is searched (swclip_core.gallery_index); here so the command line lists them
# without importing torch or faiss.
INDEX_KINDS = ("auto", "exact", "ivf", "hnsw")
#: Up to this many entries ``auto`` searches exactly (nothing approximated), ivf above. An ivf
#: index is built once per model and gallery and pays off when a layer's photos save its build
#: time. benchmarks/scale.md (2026-11-30, 2 threads, 100 real-caption queries, dim 256, float16
#: on disk): exact 3.6 ms/query at 10^5 entries and 13.5 ms at 10^6; ivf 0.1 and 0.8 ms (recall@5
#: 0.996) after builds of 3 s and 40 s, repaid after about 860 photos at 10^5 (3 s / 3.5 ms) and
#: 3,100 at 10^6 (40 s / 12.7 ms). The bound sits between, for layers of a few thousand photos.
EXACT_MAX_ENTRIES = 300_000
# Records of a CSV or vector layer that `swclip predict` reads, localizes and writes at a time:
# a few megabytes of table and its image features, whatever the size of the layer.
CHUNK_ROWS = 20_000


# The automatic kernel scale: SCALE_PER_SPACING times the median distance from each training
# location to its SCALE_NEIGHBOURS-th nearest one (the places a neighbourhood batch puts together),
# never below MIN_SCALE_M, about a phone GPS fix's accuracy. `make bench`'s sweep showed the best
# fixed scale following the place list's spacing; the factor was then measured on real imagery
# (two Landsat scenes, the bundled photos; 3 seeds, both splits): against 1, 0.5 lowered 18 of
# the 24 mean median errors of the SW-based encoders on the scenes (3 encoders x 2 scenes x 2
# splits x 2 protocols), all of swgeo's, though swclip's closed-protocol error rose on 3 of 4;
# 2 was worse than 1 (the runs of benchmarks/results.md, "Location encoders × losses", against
# the factor-1 runs that section held before; CHANGELOG, "The automatic kernel scale").
SCALE_NEIGHBOURS = 3
SCALE_PER_SPACING = 0.5
MIN_SCALE_M = 10.0
AUTO_SCALE_RULE = (
    f"{SCALE_PER_SPACING:g} x the median distance from each training location to its k-th "
    f"nearest one (k = {SCALE_NEIGHBOURS}), at least {MIN_SCALE_M:g} m"
)  # for --help and reports


@dataclass
class SpatialKernel:
    """Distance-decay kernel that turns geodesic distances into soft labels
    (docs/method.md, "Spatial weights")."""

    # None: set when training starts from the training locations' spacing
    # (objectives.spatial.resolve_kernel); the run's config.json records the value used.
    scale_m: float | None = None
    cutoff_m: float | None = None  # no weight beyond this distance; None: no cutoff
    kernel: str = "exponential"
    street_bonus: float = 0.5
    city_bonus: float = 0.0


@dataclass
class TrainConfig:
    """Everything that decides a training run."""

    objective: str = "swclip"
    backbone: str = "swclip-lite"
    pretrained: str | None = None
    # "cached": frozen image tower, features computed once (CPU friendly);
    # "finetune": the image tower trains too (GPU territory).
    mode: str = "cached"
    epochs: int = 30
    batch_size: int = 64
    # Every batch is built from random anchors plus their nearest neighbours, so that near places
    # meet inside a batch; 0 gives plain random batches.
    neighbours_per_anchor: int = 3
    lr: float = 2e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    text_layers: int | None = 2
    kernel: SpatialKernel = field(default_factory=SpatialKernel)
    lambda_nc: float = 0.5
    lambda_fair: float = 0.1
    nc_temperature: float = 0.1
    # geoclip: past batches' GPS kept as extra negatives (GeoCLIP's dynamic queue), and the
    # standard deviation (metres, per axis) of the Gaussian noise on positive GPS. 150 m is
    # GeoCLIP's own positive-noise scale, kept as the peer's setting.
    gps_queue_size: int = 4096
    gps_noise_m: float = 150.0
    # hybrid objectives: how the caption and GPS embeddings make one location embedding
    # (models.hybrid): "sum" of the two normalised embeddings, or "concat" + a linear layer.
    hybrid_combine: str = "sum"
    caption_precision: int = 5
    seed: int = 0
    device: str = "auto"
    # Forward-pass precision (device.PRECISIONS; None: the default, device.resolve_precision);
    # set to the precision that ran when training starts, so config.json records it.
    precision: str | None = None
    num_workers: int | None = None  # image-decoding processes; None: features.decode_workers
    # Content digest of the training samples (runs.samples_digest), set when a run starts, so
    # that --resume refuses other input.
    input_digest: str | None = None
    # The processes that trained (set when a run starts, swclip_core.distributed.run_settings):
    # how many (torchrun's world size; batch_size is the global batch across them), their
    # torch.distributed backend (None for one process) and each rank's device, comma-separated.
    world_size: int = 1
    backend: str | None = None
    rank_devices: str | None = None

    def validate(self) -> None:
        """Raise InputError on settings that cannot work, naming the option and the choices."""
        if self.objective not in REGISTRY:
            raise InputError(
                f"unknown objective {self.objective!r}; choose one of {tuple(REGISTRY)}"
            )
        if self.mode not in MODES:
            raise InputError(f"unknown training mode {self.mode!r}; choose one of {MODES}")
        if self.kernel.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel.kernel!r}; choose one of {KERNELS}")
        if self.epochs < 1 or self.batch_size < 2:
            raise InputError("epochs must be >= 1 and batch size >= 2")
        if self.kernel.scale_m is not None and self.kernel.scale_m <= 0:
            raise InputError("the kernel scale (metres) must be positive, or auto")
        if self.kernel.cutoff_m is not None and self.kernel.cutoff_m <= 0:
            raise InputError("the kernel cutoff (metres) must be positive, or none")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.gps_queue_size < 0 or self.gps_noise_m < 0:
            raise InputError("gps_queue_size and gps_noise_m must be >= 0")
        if self.hybrid_combine not in HYBRID_COMBINES:
            raise InputError(
                f"unknown hybrid combination {self.hybrid_combine!r}; choose one of "
                f"{HYBRID_COMBINES}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config in ``data`` (as :meth:`to_dict` writes it), checked against the dataclass:
        :class:`ValueError` names an unknown key, a missing or mistyped value, or a setting that
        cannot work (:meth:`validate`)."""
        data = dict(_checked(cls, data, ""))
        config = cls(
            kernel=SpatialKernel(**_checked(SpatialKernel, data.pop("kernel", {}), "kernel.")),
            **data,
        )
        try:
            config.validate()
        except InputError as error:
            raise ValueError(str(error)) from None
        return config

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """The config saved in a run folder; :class:`ModelError` (one line naming the file and
        what is wrong) when it cannot be read or does not describe a run."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ModelError(
                f"{path} does not exist; is {path.parent} a run folder from `swclip train`?"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ModelError(f"cannot read {path}: {error}") from None
        except json.JSONDecodeError as error:
            raise ModelError(
                f"{path} is not valid JSON ({error.msg} at line {error.lineno}); the run folder "
                "is damaged: train it again"
            ) from None
        except ValueError as error:
            raise ModelError(f"{path} does not describe a run: {error}; train it again") from None


def _checked(cls: type, data: Any, prefix: str) -> dict[str, Any]:
    """``data`` if it holds only fields of dataclass ``cls``, each of its declared type (missing
    ones take their defaults); else :class:`ValueError` naming the first wrong setting."""
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the file"
        raise ValueError(f"{where} must be a JSON object, not {json.dumps(data)[:40]}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"unknown setting {prefix}{unknown[0]}")
    for name, value in data.items():
        declared = typing.get_args(hints[name]) or (hints[name],)
        if not any(_is_a(value, expected) for expected in declared):
            wanted = " or ".join(
                "an object" if dataclasses.is_dataclass(t) else _TYPE_NAMES.get(t, t.__name__)
                for t in declared
            )
            raise ValueError(f"{prefix}{name} must be {wanted}, not {json.dumps(value)[:40]}")
    return data


_TYPE_NAMES = {type(None): "null", float: "a number", int: "an integer", str: "text"}


def _is_a(value: Any, expected: type) -> bool:
    if isinstance(value, bool):  # JSON true is no number
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    if dataclasses.is_dataclass(expected):  # checked field by field by its own _checked
        return isinstance(value, dict)
    return isinstance(value, expected)
