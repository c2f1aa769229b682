"""The ``semivariogram`` objective (docs/method.md, "Semivariogram objective"): geostatistics on
embedding space.

Idea from Chen, Wang, Deuser, Zollner & Werner, "Enhancing Contrastive Learning for
Geolocalization by Discovering Hard Negatives on Semivariograms" (SIGSPATIAL 2025,
arXiv:2509.21573), "spatially regularized contrastive learning with a semivariogram": fit how
embedding dissimilarity grows with geodesic distance, then use the fitted curve
γ(d) as the expected dissimilarity of a pair at distance d to spot false negatives (near pairs)
and hard negatives (far pairs that look alike). The formulas below are this module's own.

Dissimilarity of a pair is ``1 − cos(z_i, z_j)`` (range 0..2). For unit vectors this is exactly
``½‖z_i − z_j‖²``, the classical semivariance of a multivariate field, so γ(d) is a semivariogram
in the strict geostatistical sense.

Models (``nugget`` c₀, total ``sill`` c₀ + c, ``range_m`` a; γ(0) is reported as c₀, the limit
from the right, because pairs at the same place are still distinct photos):

- spherical:   γ(h) = c₀ + c·(1.5·h/a − 0.5·(h/a)³) for h < a, c₀ + c for h ≥ a;
- exponential: γ(h) = c₀ + c·(1 − exp(−3h/a)), a the practical range (95 % of c reached).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast
from .errors import InputError
from .geo import pairwise_haversine_m
from .io import atomic_path, write_json

MODELS = ("spherical", "exponential")
BINNINGS = ("quantile", "log")
DISSIMILARITY = "1 - cos"
# Provisional defaults of the loss (until the benchmarks tune them): far look-alikes count twice,
# near pairs count a quarter at distance 0, rising to full weight at the range.
HARD_WEIGHT = 2.0
FALSE_NEG_WEIGHT = 0.25
HARD_MARGIN = 0.1  # in units of 1 − cos
FIT_SAMPLES = 2000  # training pairs embedded to refit the variogram


@dataclass
class Semivariogram:
    """A fitted semivariogram of embedding dissimilarity against geodesic distance."""

    nugget: float
    sill: float  # total sill: nugget + partial sill, the plateau γ reaches at the range
    range_m: float
    model: str = "spherical"
    bin_distance_m: list[float] = field(default_factory=list)  # mean distance of each bin
    bin_gamma: list[float] = field(default_factory=list)  # mean dissimilarity of each bin
    bin_count: list[int] = field(default_factory=list)
    n_pairs: int = 0
    fit: str = "curve_fit"  # or the reason a fallback estimate was used
    dissimilarity: str = DISSIMILARITY

    def gamma(self, d: Any) -> Any:
        """Expected dissimilarity at distance ``d`` metres (numpy array or torch tensor in kind)."""
        return model_gamma(self.model, d, self.nugget, self.sill - self.nugget, self.range_m)

    def structure(self, d: Any) -> Any:
        """``(γ(d) − nugget) / (sill − nugget)`` in 0..1: 0 = fully correlated, 1 = independent.

        A variogram without spatial structure (sill = nugget) gives 1 everywhere.
        """
        partial = self.sill - self.nugget
        if partial <= 0:
            return torch.ones_like(d) if isinstance(d, torch.Tensor) else np.ones_like(d, float)
        return model_gamma(self.model, d, 0.0, 1.0, self.range_m)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        """JSON, written atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Semivariogram:
        return cls(**json.loads(Path(path).read_text()))


def model_gamma(model: str, d: Any, nugget: float, partial_sill: float, range_m: float) -> Any:
    """γ(d) of a ``spherical`` or ``exponential`` model (formulas in the module docstring)."""
    if model not in MODELS:
        raise InputError(f"unknown semivariogram model {model!r}; choose one of {MODELS}")
    lib = torch if isinstance(d, torch.Tensor) else np
    d = d if isinstance(d, torch.Tensor) else np.asarray(d, dtype=np.float64)
    if range_m <= 0:  # pure nugget: no spatial structure at all
        return nugget + partial_sill + 0.0 * d
    h = d / range_m
    if model == "spherical":
        shape = lib.where(h < 1.0, 1.5 * h - 0.5 * h**3, lib.ones_like(h))
    else:
        shape = 1.0 - lib.exp(-3.0 * h)
    return nugget + partial_sill * shape


def empirical_semivariogram(
    dist_m: Any, dissim: Any, *, n_bins: int = 15, binning: str = "quantile"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned ``(mean distance, mean dissimilarity, pair count)`` per non-empty bin.

    ``quantile`` bins hold equal numbers of pairs (robust to any spatial layout); ``log`` bins are
    equally wide in log-distance from the shortest positive distance (pairs at 0 m join the first).
    With at most ``n_bins`` distinct distances every distance is its own bin.
    """
    if binning not in BINNINGS:
        raise InputError(f"unknown binning {binning!r}; choose one of {BINNINGS}")
    d = np.asarray(dist_m, dtype=np.float64).reshape(-1)
    g = np.asarray(dissim, dtype=np.float64).reshape(-1)
    keep = np.isfinite(d) & np.isfinite(g)
    d, g = d[keep], g[keep]
    if d.size == 0:
        raise InputError("no finite pair to fit a semivariogram to")
    distinct = np.unique(d)
    if distinct.size <= n_bins:  # few distinct distances (a grid, duplicates): one bin each
        edges = np.append(distinct, np.inf)
    elif binning == "quantile":
        edges = np.unique(np.quantile(d, np.linspace(0.0, 1.0, n_bins + 1)))
    else:
        positive = d[d > 0]
        low = positive.min() if positive.size else 1.0
        edges = np.geomspace(low, max(d.max(), low * (1 + 1e-9)), n_bins + 1)
    # Bin b holds edges[b] <= d < edges[b+1]; the largest distance goes into the last bin.
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(which, minlength=max(len(edges) - 1, 1))
    used = count > 0
    mean_d = np.bincount(which, weights=d, minlength=count.size)[used] / count[used]
    mean_g = np.bincount(which, weights=g, minlength=count.size)[used] / count[used]
    return mean_d, mean_g, count[used]


def _initial_guess(d: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
    """Moment estimates: nugget from the nearest bin, sill from the farthest third, range where
    the binned curve first reaches 95 % of the way from nugget to sill."""
    nugget = float(max(g[0], 0.0))
    sill = float(max(np.mean(g[-max(1, len(g) // 3) :]), nugget))
    target = nugget + 0.95 * (sill - nugget)
    reached = np.nonzero(g >= target)[0]
    range_m = float(d[reached[0]] if reached.size else d[-1])
    return nugget, sill - nugget, max(range_m, float(d[d > 0].min()) if (d > 0).any() else 1.0)


def fit_semivariogram(
    dist_m: Any,
    dissim: Any,
    *,
    model: str = "spherical",
    n_bins: int = 15,
    binning: str = "quantile",
) -> Semivariogram:
    """Fit nugget, sill and range to the binned semivariogram of pairs.

    Weighted least squares (``scipy.optimize.curve_fit``, bin weights ∝ √count, nugget and partial
    sill ≥ 0, range within [shortest, 2 × longest] bin distance) from moment estimates. Falls back
    to the moment estimates when the optimiser fails or there are fewer than 3 bins, and to a flat
    variogram (no spatial structure) when all pairs are at one distance; ``fit`` says which.
    """
    from scipy.optimize import curve_fit

    if model not in MODELS:
        raise InputError(f"unknown semivariogram model {model!r}; choose one of {MODELS}")
    d, g, count = empirical_semivariogram(dist_m, dissim, n_bins=n_bins, binning=binning)
    bins = dict(
        bin_distance_m=d.tolist(),
        bin_gamma=g.tolist(),
        bin_count=count.astype(int).tolist(),
        n_pairs=int(count.sum()),
    )
    if len(d) < 2 or d[-1] <= 0:
        mean = float(np.average(g, weights=count))
        return Semivariogram(mean, mean, 0.0, model, fit="flat: one distance only", **bins)
    nugget0, partial0, range0 = _initial_guess(d, g)
    fallback = Semivariogram(nugget0, nugget0 + partial0, range0, model, **bins)
    if len(d) < 3:
        fallback.fit = "moments: fewer than 3 bins"
        return fallback
    low_range = float(d[d > 0].min())
    high_gamma = max(2.0, float(g.max()) * 2)
    bounds = ([0.0, 0.0, low_range], [high_gamma, high_gamma, 2.0 * float(d[-1])])
    start = np.clip([nugget0, partial0, range0], bounds[0], bounds[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning on a degenerate covariance is fine
            params, _ = curve_fit(
                lambda h, c0, c, a: model_gamma(model, h, c0, c, a),
                d,
                g,
                p0=start,
                sigma=1.0 / np.sqrt(count),
                bounds=bounds,
                maxfev=5000,
            )
    except (RuntimeError, ValueError) as error:
        fallback.fit = f"moments: curve_fit failed ({error})"
        return fallback
    if not np.all(np.isfinite(params)):
        fallback.fit = "moments: curve_fit gave non-finite parameters"
        return fallback
    nugget, partial, range_m = (float(p) for p in params)
    return Semivariogram(nugget, nugget + partial, range_m, model, **bins)


def semivariogram_infonce(
    logits: torch.Tensor,
    dist_m: torch.Tensor,
    vg: Semivariogram,
    *,
    cosine: torch.Tensor,
    hard_weight: float = HARD_WEIGHT,
    false_neg_weight: float = FALSE_NEG_WEIGHT,
    margin: float = HARD_MARGIN,
) -> torch.Tensor:
    """InfoNCE whose negatives are re-weighted by the fitted semivariogram.

    ``logits`` (B, B), row i = image i; ``dist_m`` (B, B) geodesic distances; ``cosine`` (B, B)
    the cosine similarities behind the logits (only used to pick hard negatives, no gradient).
    For j ≠ i, with ρ(d) = (γ(d) − nugget)/(sill − nugget) ∈ [0, 1]
    (:meth:`Semivariogram.structure`) and δ_ij = 1 − cos_ij::

        m_ij = hard_weight                      if d_ij ≥ range and δ_ij < γ(d_ij) − margin
        m_ij = f + (1 − f)·ρ(d_ij)              otherwise, f = false_neg_weight (1 beyond range)
        m_ii = 1
        ℓ_i  = −log[ exp(s_ii) / Σ_j m_ij exp(s_ij) ]            (s = logits)

    Near pairs are likely false negatives: their weight falls with the spatial correlation the
    variogram measured, to ``false_neg_weight`` at distance 0. Far pairs that are more alike than
    γ predicts by more than ``margin`` are hard negatives. The text→image term uses ``logitsᵀ`` and
    ``mᵀ`` built from ``cosineᵀ``; loss = ½(mean_i ℓ_i + mean_j ℓ′_j). With
    ``hard_weight = false_neg_weight = 1`` every m is 1 and this is ``clip_infonce`` exactly.
    """
    if hard_weight < 0 or false_neg_weight < 0:
        raise ValueError("hard_weight and false_neg_weight must be >= 0")
    logits = logits.float()
    m = negative_weights(dist_m, cosine, vg, hard_weight, false_neg_weight, margin)
    return 0.5 * (_weighted_ce(logits, m) + _weighted_ce(logits.T, m.T))


def negative_weights(
    dist_m: torch.Tensor,
    cosine: torch.Tensor,
    vg: Semivariogram,
    hard_weight: float,
    false_neg_weight: float,
    margin: float,
) -> torch.Tensor:
    """The (B, B) weights m_ij of :func:`semivariogram_infonce` (diagonal 1, no gradient)."""
    d = dist_m.detach().to(torch.float64)
    delta = 1.0 - cosine.detach().to(torch.float64)
    near = false_neg_weight + (1.0 - false_neg_weight) * vg.structure(d)
    hard = (d >= vg.range_m) & (delta < vg.gamma(d) - margin)
    m = torch.where(hard, torch.full_like(d, hard_weight), near)
    m.fill_diagonal_(1.0)
    return m.to(torch.float32)


def _weighted_ce(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # log Σ_j m_ij exp(s_ij) = logsumexp(s_ij + log m_ij); a zero weight drops the pair (log 0 =
    # −inf contributes exp(−inf) = 0 and no gradient), the diagonal weight 1 keeps it finite.
    m = m.to(logits.device)
    denominator = torch.logsumexp(logits + torch.log(m), dim=1)
    return (denominator - logits.diagonal()).mean()


@torch.no_grad()
def embedding_semivariogram(
    backbone,
    lat: np.ndarray,
    lon: np.ndarray,
    tokens: torch.Tensor,
    *,
    device: torch.device,
    features: torch.Tensor | None = None,
    images=None,
    max_samples: int = FIT_SAMPLES,
    seed: int = 0,
    model: str = "spherical",
    n_bins: int = 15,
) -> Semivariogram:
    """Fit the cross-modal semivariogram of a model's current embeddings.

    A random sample of up to ``max_samples`` training pairs is embedded (image ``features`` through
    the image head in cached mode, otherwise the ``images`` dataset through the whole image tower;
    captions through the text tower); every image i is paired with every other sample's caption
    j ≠ i (the negatives the loss sees), distance = haversine between their locations. The
    backbone is left in eval mode.
    """
    n = len(lat)
    idx = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, max_samples)])
    backbone.eval()
    img_chunks, txt_chunks = [], []
    for start in range(0, len(idx), 256):
        part = torch.as_tensor(idx[start : start + 256])
        with autocast(device):
            if features is not None:
                img = backbone.image_head(features[part].to(device))
            else:
                batch = torch.stack([images[int(i)][0] for i in part]).to(device)
                img = backbone.encode_image(batch)
            txt = backbone.encode_text(tokens[part].to(device))
        img_chunks.append(F.normalize(img.float(), dim=-1).cpu())
        txt_chunks.append(F.normalize(txt.float(), dim=-1).cpu())
    cosine = (torch.cat(img_chunks) @ torch.cat(txt_chunks).T).double().numpy()
    dist = pairwise_haversine_m(np.asarray(lat)[idx], np.asarray(lon)[idx])
    off = ~np.eye(len(idx), dtype=bool)
    return fit_semivariogram(dist[off], 1.0 - cosine[off], model=model, n_bins=n_bins)


def plot_semivariogram(vg: Semivariogram, path: str | Path) -> Path:
    """PNG of the binned semivariogram (points sized by pair count) and the fitted model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    d = np.asarray(vg.bin_distance_m, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        if d.size:
            count = np.asarray(vg.bin_count, dtype=float)
            ax.scatter(
                d,
                vg.bin_gamma,
                s=20 + 80 * count / count.max(),
                color="#1f77b4",
                label="binned pairs (size ∝ count)",
                zorder=3,
            )
            curve_d = np.linspace(0.0, max(d.max(), vg.range_m) * 1.05, 400)
            ax.plot(curve_d, vg.gamma(curve_d), color="#d62728", label=f"{vg.model} model")
        ax.axhline(vg.nugget, color="grey", ls=":", lw=1)
        ax.axhline(vg.sill, color="grey", ls="--", lw=1)
        if vg.range_m > 0:
            ax.axvline(vg.range_m, color="grey", ls="-.", lw=1)
        ax.set_title(
            f"nugget {vg.nugget:.3f}, sill {vg.sill:.3f}, range {vg.range_m:,.0f} m "
            f"({vg.n_pairs:,} pairs)",
            fontsize=9,
        )
        ax.set_xlabel("geodesic distance (m)")
        ax.set_ylabel(f"semivariance γ = mean({vg.dissimilarity})")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
