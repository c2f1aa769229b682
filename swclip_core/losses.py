"""Spatial weights, soft labels and the SW-CLIP objectives
(docs/method.md, "Spatial weights" and "SW-CLIP loss").

Conventions: ``logits`` is (B, B) with row i = image i and column j = text j. Code tensors
(street, city, region) are integer tensors where -1 means unknown and is never equal to anything.
Every function works on any device; half-precision inputs are promoted to float32 for the
log-softmax so mixed-precision training stays stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from swclip_core.config import KERNELS
from swclip_core.geo import haversine_m, pairwise_haversine_m

UNKNOWN_CODE = -1
MAX_LOGIT_SCALE = 100.0  # cap on the learned inverse temperature, as in CLIP


def _stable_dtype(x: torch.Tensor) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _same_code(codes: Any, size: int, device: torch.device, extra: Any = None) -> torch.Tensor:
    """(B, B + Q) bool: ``c_i == c_j`` and neither is unknown, the columns being the batch's codes
    followed by ``extra`` (Q codes, or None for none)."""
    c = torch.as_tensor(codes, device=device).reshape(-1)
    if c.numel() != size:
        raise ValueError(f"Got {c.numel()} codes for a batch of {size} samples.")
    columns = c if extra is None else torch.cat((c, torch.as_tensor(extra, device=device)))
    return (c[:, None] == columns[None, :]) & (c[:, None] != UNKNOWN_CODE)


class Candidates(NamedTuple):
    """Locations beyond the batch that a batch's photos are also scored against (a queue of past
    batches' locations): degrees, and street/city codes (−1 unknown) or None."""

    lat: torch.Tensor
    lon: torch.Tensor
    street: torch.Tensor | None = None
    city: torch.Tensor | None = None


def spatial_weights(
    lat: Any,
    lon: Any,
    *,
    scale_m: float,
    cutoff_m: float | None,
    kernel: str = "exponential",
    street: Any = None,
    city: Any = None,
    street_bonus: float = 0.0,
    city_bonus: float = 0.0,
    extra: Candidates | None = None,
) -> torch.Tensor:
    """Pairwise spatial weights of a batch (docs/method.md, "Spatial weights").

    ``w_ij = k(d_ij) + street_bonus·[s_i = s_j ≠ −1] + city_bonus·[c_i = c_j ≠ −1]``, where
    ``k(d) = exp(−d/scale_m)`` (exponential) or ``exp(−d²/(2·scale_m²))`` (gaussian), and 0 where
    ``d > cutoff_m``; ``cutoff_m`` None or inf means no cutoff. The diagonal is included. Returns a
    non-negative symmetric (B, B) tensor on ``lat``'s device, in ``lat``'s floating dtype (the
    default dtype for non-tensor or integer input). Distances are computed in float64 because
    float32 degrees are only good to about half a metre.

    With ``extra`` (Q more locations), the result is (B, B + Q): the batch's columns, then one
    column per extra location, by the same rule (codes of the extra locations from ``extra``).
    """
    if kernel not in KERNELS:
        raise ValueError(f"Unknown spatial kernel {kernel!r}; choose one of {KERNELS}.")
    if not scale_m > 0:
        raise ValueError(f"scale_m must be a positive distance in metres, got {scale_m!r}.")
    if street_bonus < 0 or city_bonus < 0:
        raise ValueError(
            "street_bonus and city_bonus must be >= 0 so that weights stay non-negative."
        )
    lat_t = torch.as_tensor(lat)
    out_dtype = lat_t.dtype if lat_t.dtype.is_floating_point else torch.get_default_dtype()
    device = lat_t.device
    lat64 = lat_t.detach().to(torch.float64).reshape(-1)
    lon64 = torch.as_tensor(lon, device=device).detach().to(torch.float64).reshape(-1)
    if lat64.numel() != lon64.numel():
        raise ValueError(f"Got {lat64.numel()} latitudes but {lon64.numel()} longitudes.")
    if extra is None:
        d = pairwise_haversine_m(lat64, lon64)
    else:
        to_lat = torch.cat((lat64, torch.as_tensor(extra.lat, device=device).to(torch.float64)))
        to_lon = torch.cat((lon64, torch.as_tensor(extra.lon, device=device).to(torch.float64)))
        d = haversine_m(lat64[:, None], lon64[:, None], to_lat[None, :], to_lon[None, :])
    if kernel == "exponential":
        w = torch.exp(-d / scale_m)
    else:
        w = torch.exp(-(d**2) / (2 * scale_m**2))
    if cutoff_m is not None and not math.isinf(cutoff_m):
        w = torch.where(d > cutoff_m, torch.zeros_like(w), w)
    size = lat64.numel()
    extra_street = extra_city = None
    if extra is not None:
        extra_street, extra_city = (
            _codes_or_unknown(extra.street, extra),
            _codes_or_unknown(extra.city, extra),
        )
    if street is not None and street_bonus:
        w = w + street_bonus * _same_code(street, size, device, extra_street).to(w.dtype)
    if city is not None and city_bonus:
        w = w + city_bonus * _same_code(city, size, device, extra_city).to(w.dtype)
    return w.to(out_dtype)


def _codes_or_unknown(codes: Any, extra: Candidates) -> torch.Tensor:
    if codes is None:
        return torch.full((len(extra.lat),), UNKNOWN_CODE, dtype=torch.long)
    return torch.as_tensor(codes)


def soft_labels(w: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` divided by their sums (each row a distribution over the batch).

    Raises ValueError if a row sums to 0: that sample would have no target at all.
    """
    sums = w.sum(dim=1, keepdim=True)
    if bool((sums <= 0).any()):
        raise ValueError("A row of the spatial weights sums to 0; a sample has no soft target.")
    return w / sums


def clip_infonce(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: ``½[CE(logits, I) + CE(logitsᵀ, I)]``."""
    logits = _stable_dtype(logits)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    # Masked candidates (logit −inf) carry no target: 0 · −inf would be NaN.
    terms = torch.where(targets > 0, targets.to(log_p.dtype) * log_p, 0.0)
    return -terms.sum(dim=1).mean()


def sw_infonce(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Spatially-weighted InfoNCE: soft cross-entropy with ``soft_labels(w)`` image→location and
    ``soft_labels(wᵀ)`` location→image, averaged. Equals :func:`clip_infonce` for ``w = I``.

    ``logits`` and ``w`` may be ``(B, B + Q)``: the batch's B locations followed by Q extra
    candidate locations (a queue of past batches' locations), which enter the image→location term
    only; logits of −inf (a photo's own place in the queue) must have weight 0.
    """
    logits = _stable_dtype(logits)
    w = w.to(logits.device)
    size = logits.shape[0]
    return 0.5 * (
        _soft_cross_entropy(logits, soft_labels(w))
        + _soft_cross_entropy(logits[:, :size].T, soft_labels(w[:, :size].T))
    )


def neighbourhood_consistency(z: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """Pull each sample's embedding neighbourhood towards its spatial neighbourhood (one modality).

    ``S = ẑ ẑᵀ / temperature`` with ẑ the L2-normalised rows of z and the diagonal excluded from
    the softmax; ``w°`` is w with a zero diagonal. Loss = mean over rows with ``Σ w°_i > 0`` of
    ``−Σ_{j≠i} (w°_ij / Σ_k w°_ik) · log softmax_{j≠i}(S_i)_j``; a zero that still carries a graph
    when no row qualifies.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    z = F.normalize(_stable_dtype(z), dim=1)
    size = z.shape[0]
    eye = torch.eye(size, dtype=torch.bool, device=z.device)
    s = z @ z.T / temperature
    # A large finite negative rather than -inf: -inf on the diagonal gives NaN gradients
    # (0 · -inf) the moment anything multiplies the diagonal of the log-probabilities.
    log_p = F.log_softmax(s.masked_fill(eye, torch.finfo(s.dtype).min / 2), dim=1)
    log_p = log_p.masked_fill(eye, 0.0)
    w_off = w.to(device=z.device, dtype=s.dtype).masked_fill(eye, 0.0)
    row_sums = w_off.sum(dim=1)
    kept = row_sums > 0
    targets = w_off / row_sums.clamp_min(torch.finfo(s.dtype).tiny)[:, None]
    row_loss = -(targets * log_p).sum(dim=1)
    # No Python branch (and no device sync): rows not kept have all-zero targets and loss 0.
    return (row_loss * kept).sum() / kept.sum().clamp_min(1)


def regional_fairness(logits: torch.Tensor, region: Any) -> torch.Tensor:
    """Population variance across regions of the mean matching probability.

    ``p_i = softmax_j(logits)_ii``; ``P_r`` = mean of ``p_i`` over the batch samples of region r
    (code −1 ignored); loss = mean of ``(P_r − mean P)²``; 0 (with a graph) when fewer than two
    regions are present.
    """
    logits = _stable_dtype(logits)
    p = F.softmax(logits, dim=1).diagonal()
    codes = torch.as_tensor(region, device=logits.device).reshape(-1)
    if codes.numel() != p.numel():
        raise ValueError(f"Got {codes.numel()} region codes for a batch of {p.numel()} samples.")
    known = codes != UNKNOWN_CODE
    regions, index = torch.unique(codes[known], return_inverse=True)
    if regions.numel() < 2:
        return p.sum() * 0.0
    totals = torch.zeros(regions.numel(), dtype=p.dtype, device=p.device).index_add(
        0, index, p[known]
    )
    counts = torch.bincount(index, minlength=regions.numel()).to(p.dtype)
    means = totals / counts
    return ((means - means.mean()) ** 2).mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the SW-CLIP total loss ``L = sw_infonce + λ_nc·L_nc + λ_fair·L_fair``.

    The defaults (λ_nc 0.5, λ_fair 0.1, nc temperature 0.1) are provisional, chosen for scale
    (each term is then a fraction of the InfoNCE term), until the benchmarks tune them.
    """

    lambda_nc: float = 0.5
    lambda_fair: float = 0.1
    nc_temperature: float = 0.1


def swclip_loss(
    logits: torch.Tensor,
    img_emb: torch.Tensor,
    txt_emb: torch.Tensor,
    w: torch.Tensor,
    region: Any,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SW-CLIP objective ``sw_infonce + λ_nc·½[nc(img, w) + nc(txt, w)] + λ_fair·fairness``.

    ``txt_emb`` is the batch's location embeddings (captions, coordinates or both). ``logits`` and
    ``w`` may carry Q extra candidate locations as columns (see :func:`sw_infonce`); the
    neighbourhood and fairness terms use the batch's own (B, B) block. ``region`` may be None (no
    fairness term). Returns the total (differentiable) and its parts as floats for logging:
    ``sw_infonce``, ``nc``, ``fairness``, ``total``.
    """
    sw = sw_infonce(logits, w)
    size = logits.shape[0]
    w_batch = w[:, :size]
    nc = 0.5 * (
        neighbourhood_consistency(img_emb, w_batch, weights.nc_temperature)
        + neighbourhood_consistency(txt_emb, w_batch, weights.nc_temperature)
    )
    fair = sw * 0.0 if region is None else regional_fairness(logits[:, :size], region)
    total = sw + weights.lambda_nc * nc + weights.lambda_fair * fair
    parts = {
        "sw_infonce": float(sw.detach()),
        "nc": float(nc.detach()),
        "fairness": float(fair.detach()),
        "total": float(total.detach()),
    }
    return total, parts
