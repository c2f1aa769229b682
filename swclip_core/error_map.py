"""The PNG error map: true locations, predictions coloured by their error, and the lines between
them, one panel per far-apart group of photos.

Written through :func:`swclip_core.io.atomic_path`, like every output; matplotlib is imported only
when a map is drawn.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from swclip_core.geo import EARTH_RADIUS_M
from swclip_core.io import atomic_path


def format_distance(metres: float) -> str:
    """``850 m`` below a kilometre, ``12.3 km`` above."""
    return f"{metres:,.0f} m" if metres < 1000 else f"{metres / 1000:,.1f} km"


def map_clusters(lat: np.ndarray, lon: np.ndarray, gap_m: float = 50_000.0) -> list[np.ndarray]:
    """Groups of points chained by gaps under ``gap_m`` (single linkage), largest first.

    Photos from far-apart places (a street in Lund, towns in France) each get their own map panel;
    one panel would shrink every group to a dot.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import BallTree

    points = np.radians(np.column_stack([lat, lon]))
    pairs = BallTree(points, metric="haversine").query_radius(points, r=gap_m / EARTH_RADIUS_M)
    rows = np.repeat(np.arange(len(points)), [len(p) for p in pairs])
    graph = coo_matrix(
        (np.ones(len(rows)), (rows, np.concatenate(pairs))), shape=(len(points), len(points))
    )
    _, labels = connected_components(graph, directed=False)
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    return sorted(groups, key=len, reverse=True)


def render_error_map(
    predictions: pd.DataFrame, path: str | Path, *, title: str, max_panels: int = 3
) -> Path:
    """A PNG map: true locations, predictions coloured by error, and the lines between them.

    Far-apart groups of photos (see :func:`map_clusters`) get a panel each, the largest
    ``max_panels`` of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # Debian's python3-matplotlib (a QGIS dependency) leaves an mpl_toolkits that a newer
        # matplotlib cannot use for 3-D axes; these maps are 2-D.
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

    predictions = predictions.reset_index(drop=True)
    errors = predictions["error_m"].to_numpy(dtype=float)
    known = np.isfinite(errors)  # photos localized from scratch have no truth and no error
    # Panels follow the true locations, or the predictions where the truth is unknown.
    anchor_lat = predictions["true_lat"].where(known, predictions["pred_lat"]).to_numpy(float)
    anchor_lon = predictions["true_lon"].where(known, predictions["pred_lon"]).to_numpy(float)
    groups = map_clusters(anchor_lat, anchor_lon)[:max_panels]
    shown = np.maximum(errors[known], 1.0)
    # Errors span metres to kilometres: a log scale keeps both ends readable.
    norm = (
        LogNorm(vmin=shown.min(), vmax=max(shown.max(), shown.min() * 10)) if known.any() else None
    )
    fig, axes = plt.subplots(
        1, len(groups), figsize=(7 * len(groups) + 1, 7), dpi=110, squeeze=False
    )
    colour_source = None
    for ax, group in zip(axes[0], groups, strict=True):
        colour_source = _draw_error_panel(ax, predictions.iloc[group], norm) or colour_source
    if colour_source is not None:
        fig.colorbar(colour_source, ax=axes[0].tolist(), shrink=0.75, label="error (m, log scale)")
    median = format_distance(float(np.median(errors[known]))) if known.any() else "unknown"
    panels = f"; the {len(groups)} largest groups of photos" if len(groups) > 1 else ""
    fig.suptitle(f"{title}\nmedian error {median}, n = {len(predictions)}{panels}", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _draw_error_panel(ax, predictions: pd.DataFrame, norm):
    """One map panel; returns the scatter that carries the error colours (None without truth)."""
    errors = predictions["error_m"].to_numpy(dtype=float)
    known = np.isfinite(errors)
    scored = predictions[known]
    for row in scored.itertuples():
        ax.plot(
            [row.true_lon, row.pred_lon],
            [row.true_lat, row.pred_lat],
            color="0.55",
            linewidth=0.7,
            zorder=1,
        )
    ax.scatter(
        scored["true_lon"],
        scored["true_lat"],
        s=22,
        facecolors="none",
        edgecolors="#1b9e77",
        linewidths=1.2,
        label="true location",
        zorder=2,
    )
    colours = None
    if known.any():
        colours = ax.scatter(
            scored["pred_lon"],
            scored["pred_lat"],
            s=18,
            c=np.maximum(errors[known], 1.0),
            cmap="plasma",
            norm=norm,
            edgecolors="black",
            linewidths=0.3,
            label="prediction (colour = error)",
            zorder=3,
        )
    if not known.all():
        ax.scatter(
            predictions.loc[~known, "pred_lon"],
            predictions.loc[~known, "pred_lat"],
            s=18,
            c="0.4",
            marker="D",
            label="prediction (true location unknown)",
            zorder=3,
        )
    lat0 = float(np.nanmean(predictions["pred_lat"]))
    # Degrees of longitude shrink with latitude: keep the map's shape true at the data's latitude.
    ax.set_aspect(1.0 / max(np.cos(np.radians(lat0)), 1e-6), adjustable="datalim")
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.ticklabel_format(useOffset=False, style="plain")  # whole degrees, not "+5.569e1"
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return colours
