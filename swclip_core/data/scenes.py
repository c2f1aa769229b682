"""Drawing one synthetic street scene (see :mod:`swclip_core.data.synthetic` for what the scenes
model and why): with the place's town style, street character and local field
(:mod:`swclip_core.data.scene_styles`), the sky, backdrop, facades, street furniture, occluders and
camera nuisances, and the EXIF that marks the file as synthetic. Deterministic: the same seed gives
the same pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter
from PIL.TiffImagePlugin import IFDRational

from swclip_core.data.scene_styles import (
    GENERATOR_VERSION,
    StreetStyle,
    TownStyle,
    hsv_colour,
    local_field,
    seeded_rng,
    street_style,
    style_keys,
    town_style,
)
from swclip_core.errors import InputError

SYNTHETIC_MARKER = "SW-CLIP synthetic scene"
# GENERATOR_VERSION and local_field are imported from here too (by synthetic.py and the tests).
_EXIF_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
_EXIF_GPS_IFD = 0x8825


@lru_cache(maxsize=16)
def _grids(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return ys, xs


def _fill(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` (3,) or per-column (W, 3) where ``mask`` (H, W) is set."""
    np.copyto(img, np.broadcast_to(colour, img.shape), where=mask[..., None])


def _px(value: float) -> int:
    """Nearest pixel index (half up, so numpy and Python floats round alike)."""
    return math.floor(value + 0.5)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: np.ndarray) -> None:
    h, w = img.shape[:2]
    a, b = max(_px(x0), 0), min(_px(x1), w)
    c, d = max(_px(y0), 0), min(_px(y1), h)
    if a < b and c < d:
        img[c:d, a:b] = colour


def _ellipse(
    img: np.ndarray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    colour: np.ndarray,
    alpha: float = 1.0,
) -> None:
    h, w = img.shape[:2]
    a, b = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    c, d = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    if a >= b or c >= d:
        return
    yy = (np.arange(c, d, dtype=np.float32)[:, None] - cy) / ry
    xx = (np.arange(a, b, dtype=np.float32)[None, :] - cx) / rx
    inside = (xx * xx + yy * yy) <= 1.0
    patch = img[c:d, a:b]
    if alpha >= 1.0:
        patch[inside] = colour
    else:
        patch[inside] = (1.0 - alpha) * patch[inside] + alpha * colour


def _draw_buildings(
    img: np.ndarray,
    layout: np.random.Generator,
    town: TownStyle,
    street: StreetStyle,
    field: np.ndarray,
    base: float,
    scale: float,
    x_start: float,
) -> None:
    """The row of facades: per-column arrays built building by building, then painted at once."""
    height, width = img.shape[:2]
    ys, _ = _grids(width, height)
    floor_h = 20.0 * scale
    ground_h = 1.15 * floor_h
    top = np.full(width, np.inf, dtype=np.float32)
    roof_line = np.full(width, np.inf, dtype=np.float32)
    facade = np.zeros((width, 3), dtype=np.float32)
    roof_rgb = np.zeros((width, 3), dtype=np.float32)
    window_rgb = np.zeros((width, 3), dtype=np.float32)
    sign_rgb = np.zeros((width, 3), dtype=np.float32)
    win_col = np.zeros(width, dtype=bool)
    door_col = np.zeros(width, dtype=bool)
    shop_col = np.zeros(width, dtype=bool)
    town_roof = hsv_colour(town.roof_hsv[0] + 0.03 * field[3], town.roof_hsv[1], town.roof_hsv[2])
    x = x_start
    # The draws do not depend on the scale, so every view of a place shows the same buildings.
    while x < width:
        w = max(
            street.building_width * scale * math.exp(layout.normal(0.0, street.width_jitter)),
            14.0 * scale,
        )
        is_gap = layout.random() < street.gap_share
        floors = street.floors + int(layout.choice([-1, 0, 0, 0, 1]))
        h_, s_, v_ = town.palette[street.colours[int(layout.integers(len(street.colours)))]]
        tint = layout.normal(0.0, 0.04, size=2)
        light = layout.uniform(0.75, 1.25)
        door_slot = layout.random()
        is_shop = layout.random() < town.shop_share
        sign_hue = layout.random()
        x0, x1 = x, x + (0.35 * w if is_gap else w)
        x = x1
        a, b = max(_px(x0), 0), min(_px(x1), width)
        if is_gap or b <= a:
            continue
        cols = np.arange(a, b, dtype=np.float32)
        flat_top = base - ground_h - max(floors - 1, 0) * floor_h
        if town.pitched_roofs:
            ridge = min(0.4 * w, 1.6 * floor_h)
            top[a:b] = flat_top - ridge * (1.0 - np.abs(cols - (x0 + x1) / 2) / (w / 2))
            roof_rgb[a:b] = town_roof
        else:
            top[a:b] = flat_top - 3.0 * scale
            roof_rgb[a:b] = hsv_colour(h_, s_, v_ * 0.6)
        roof_line[a:b] = flat_top
        facade[a:b] = hsv_colour(
            h_ + 0.07 * field[0] + tint[0], s_ + tint[1], v_ * (1.0 + 0.15 * field[1])
        )
        window_rgb[a:b] = np.array(town.window_rgb, dtype=np.float32) * light
        margin = 0.18 * w
        n_win = max(int((w - 2 * margin) / (street.window_spacing * scale)), 1)
        spacing = (w - 2 * margin) / n_win
        local = cols - x0 - margin
        inside = (local > 0) & (local < w - 2 * margin)
        win_col[a:b] = inside & (np.abs(np.mod(local, spacing) - spacing / 2) < 0.28 * spacing)
        door_x = x0 + margin + (int(door_slot * n_win) + 0.5) * spacing
        door_col[a:b] = np.abs(cols - door_x) < max(0.22 * spacing, 3.0 * scale)
        if is_shop:
            shop_col[a:b] = inside & ~door_col[a:b]
            sign_rgb[a:b] = hsv_colour(sign_hue, 0.7, 0.8)

    above_ground = base - ys  # (H, 1): height above the facade base
    building = (ys >= top[None, :]) & (ys < base)
    _fill(img, building, facade)
    _fill(img, building & (ys < roof_line[None, :]), roof_rgb)
    in_floor = np.mod(above_ground - ground_h, floor_h)
    upper = (above_ground > ground_h) & (ys > roof_line[None, :] + 2.0 * scale)
    window_rows = upper & (in_floor > 0.22 * floor_h) & (in_floor < 0.72 * floor_h)
    _fill(img, building & window_rows & win_col[None, :], window_rgb)
    # A darker string course at every floor gives the facade its horizontal rhythm.
    course = building & upper & (in_floor < 1.5 * scale)
    img[course] *= 0.8
    door = building & door_col[None, :] & (above_ground < 0.85 * ground_h)
    shop = building & shop_col[None, :] & (above_ground > 2.0) & (above_ground < 0.72 * ground_h)
    sign = (
        building
        & shop_col[None, :]
        & (above_ground >= 0.75 * ground_h)
        & (above_ground < 0.97 * ground_h)
    )
    _fill(img, shop, window_rgb * 1.2)
    _fill(img, sign, sign_rgb)
    _fill(img, door, facade * 0.35)


def _draw_tree(
    img: np.ndarray, x: float, ground: float, scale: float, green: np.ndarray, size: float
) -> None:
    trunk_h = 22.0 * scale * size
    radius = 16.0 * scale * size
    _rect(
        img,
        x - 2 * scale,
        ground - trunk_h,
        x + 2 * scale,
        ground,
        np.array([0.28, 0.2, 0.12], np.float32),
    )
    cy = ground - trunk_h - 0.6 * radius
    _ellipse(img, x, cy, radius, radius * 0.95, green)
    _ellipse(img, x - 0.25 * radius, cy - 0.3 * radius, 0.6 * radius, 0.55 * radius, green * 1.25)


def _draw_car(
    img: np.ndarray, rng: np.random.Generator, x: float, ground: float, scale: float
) -> None:
    length = rng.uniform(48.0, 70.0) * scale
    body_h = rng.uniform(12.0, 16.0) * scale
    colour = hsv_colour(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.2, 0.95))
    glass = np.array([0.15, 0.18, 0.22], np.float32)
    _rect(img, x, ground - body_h, x + length, ground - 3 * scale, colour)
    _rect(img, x + 0.2 * length, ground - 1.8 * body_h, x + 0.8 * length, ground - body_h, colour)
    _rect(img, x + 0.25 * length, ground - 1.65 * body_h, x + 0.75 * length, ground - body_h, glass)
    for wheel_x in (x + 0.2 * length, x + 0.8 * length):
        _ellipse(
            img,
            wheel_x,
            ground - 3 * scale,
            5.5 * scale,
            5.5 * scale,
            np.array([0.05, 0.05, 0.05], np.float32),
        )


def _draw_pedestrian(
    img: np.ndarray, rng: np.random.Generator, x: float, ground: float, scale: float
) -> None:
    tall = rng.uniform(28.0, 40.0) * scale
    coat = hsv_colour(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.1, 0.8))
    _rect(
        img,
        x - 2.5 * scale,
        ground - 0.45 * tall,
        x + 2.5 * scale,
        ground,
        np.array([0.12, 0.12, 0.16], np.float32),
    )
    _ellipse(img, x, ground - 0.62 * tall, 4.5 * scale, 0.22 * tall, coat)
    _ellipse(
        img,
        x,
        ground - 0.9 * tall,
        3.2 * scale,
        3.6 * scale,
        hsv_colour(0.07, rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.9)),
    )


def render_scene(
    lat: float,
    lon: float,
    street: str | None,
    city: str | None,
    *,
    seed: int,
    size: tuple[int, int] = (256, 192),
    view: int = 0,
) -> Image.Image:
    """Draw the synthetic street scene of one place (``size`` is width, height in pixels).

    ``seed`` fixes the whole synthetic world (town and street styles, the local field) and the
    nuisance of each view; ``view`` picks another view of the same place (same buildings, other
    lighting, viewpoint, occluders and noise). The image's ``info["exif"]`` carries the synthetic
    marker; pass ``exif=image.info["exif"]`` when saving it yourself.
    """
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise InputError(f"Cannot draw a scene at lat={lat}, lon={lon}: not a WGS84 coordinate.")
    width, height = int(size[0]), int(size[1])
    if width < 32 or height < 32:
        raise InputError(f"Scene size must be at least 32 x 32 pixels, got {width} x {height}.")
    town_key, street_key = style_keys(lat, lon, street, city)
    town = town_style(seed, town_key)
    road = street_style(seed, town_key, street_key)
    field = local_field(lat, lon, seed=seed)
    place = f"{lat:.7f},{lon:.7f}"
    # Separate streams so the number of buildings a view happens to show cannot shift the trees.
    layout = seeded_rng(seed, "layout", town_key, street_key, place)
    furniture = seeded_rng(seed, "furniture", town_key, street_key, place)
    nuisance = seeded_rng(seed, "view", town_key, street_key, place, view)

    # Viewpoint: the camera drifts a little sideways, up/down and in/out between views.
    size_scale = height / 192.0
    scale = size_scale * (1.25 - 0.45 * road.depth) * nuisance.uniform(0.95, 1.05)
    road_h = height * (0.13 + 0.13 * road.depth)
    pave_h = height * (0.04 + 0.05 * road.setback)
    kerb = height - road_h + nuisance.uniform(-2.5, 2.5) * size_scale
    base = kerb - pave_h
    ys, xs = _grids(width, height)
    img = np.empty((height, width, 3), dtype=np.float32)

    # Sky: clear blue to hazy grey, shifted by the local field; clouds are per view.
    haze = 0.5 + 0.35 * field[2] + nuisance.normal(0.0, 0.08)
    sky_top = hsv_colour(0.6 + 0.02 * field[2], 0.55 * (1 - haze) + 0.08, 0.85)
    sky_low = hsv_colour(0.58 + 0.04 * field[2], 0.25 * (1 - haze) + 0.05, 0.95)
    ramp = np.clip(ys / max(base, 1.0), 0.0, 1.0)[..., None]
    img[:] = sky_top + (sky_low - sky_top) * ramp
    for _ in range(int(nuisance.integers(0, 4))):
        _ellipse(
            img,
            nuisance.uniform(0, width),
            nuisance.uniform(0, 0.35 * base),
            nuisance.uniform(15, 45) * size_scale,
            nuisance.uniform(5, 12) * size_scale,
            np.array([0.97, 0.97, 0.98], np.float32),
            alpha=float(nuisance.uniform(0.4, 0.8)),
        )

    # Backdrop: hills (town) coloured by the local vegetation field.
    green = hsv_colour(0.27 + 0.05 * field[3], 0.45 + 0.15 * field[3], 0.45)
    hill_phase = float(furniture.uniform(0, 2 * math.pi))
    hill_top = base * (
        1.0 - town.hill_height * (0.6 + 0.4 * np.sin(xs / (40.0 * scale) + hill_phase))
    )
    _fill(img, ys >= hill_top, green * 0.8 + sky_low * 0.2)

    x_start = (-furniture.uniform(0.0, road.building_width) + nuisance.uniform(-8, 8)) * scale
    _draw_buildings(img, layout, town, road, field, base, scale, x_start)

    # Ground: front gardens, pavement, kerb, road with markings.
    b, k = _px(base), _px(kerb)
    pavement = np.float32(0.62 + 0.1 * field[1])
    img[b:k] = pavement
    if road.setback > 0.6:
        _rect(img, 0, base - 4 * scale, width, base + 0.4 * pave_h, green * 0.7)
    img[k : k + max(int(2 * size_scale), 1)] = 0.8
    asphalt = np.linspace(0.3, 0.22, max(height - k - 2, 0), dtype=np.float32)[:, None, None]
    img[k + 2 :] = asphalt
    mid = _px((k + height) / 2)
    dash = np.mod(xs[0] + furniture.uniform(0, 40), 40.0 * scale) < 22.0 * scale
    img[mid : mid + max(int(2 * size_scale), 1), dash] = 0.9
    if road.double_yellow:
        for offset in (4, 7):
            row = k + int(offset * size_scale)
            img[row : row + 1] = np.array([0.85, 0.72, 0.1], np.float32)

    # Street furniture, stable for a place: trees and lamp posts on the pavement.
    tree_count = furniture.poisson(road.tree_rate * width / 256.0 * (1.0 + 0.4 * field[3]))
    for _ in range(int(tree_count)):
        _draw_tree(
            img,
            furniture.uniform(0, width),
            kerb - 0.3 * pave_h,
            scale,
            green,
            float(furniture.uniform(0.8, 1.3)),
        )
    for _ in range(int(furniture.poisson(road.pole_rate * width / 256.0))):
        px = float(furniture.uniform(0, width))
        pole = np.array([0.2, 0.22, 0.24], np.float32)
        _rect(img, px - scale, kerb - 62 * scale, px + scale, kerb - 0.2 * pave_h, pole)
        _rect(img, px - scale, kerb - 62 * scale, px + 9 * scale, kerb - 60 * scale, pole)

    # Occluders, different in every view; cars last since they are nearest the camera.
    for _ in range(int(nuisance.poisson(0.8))):
        _draw_pedestrian(img, nuisance, nuisance.uniform(0, width), kerb - 0.15 * pave_h, scale)
    for _ in range(int(nuisance.poisson(road.car_rate))):
        _draw_car(img, nuisance, nuisance.uniform(-30, width), kerb + 0.35 * road_h, scale)

    # Photometric nuisance: exposure, colour temperature, side light, gamma, sensor noise.
    warmth = nuisance.normal(0.0, 0.05)
    gain = nuisance.uniform(0.88, 1.12) * np.array([1 + warmth, 1.0, 1 - warmth], np.float32)
    side = 1.0 + nuisance.uniform(-0.15, 0.15) * (xs[..., None] / width - 0.5)
    img *= gain
    img *= side
    np.clip(img, 0.0, 1.0, out=img)
    np.power(img, np.float32(nuisance.uniform(0.9, 1.1)), out=img)
    noise = nuisance.standard_normal(img.shape, dtype=np.float32)
    img += noise * np.float32(nuisance.uniform(0.004, 0.03))
    pixels = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    blur = float(nuisance.uniform(0.0, 0.9))
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur * size_scale))
    image.info["exif"] = _exif(lat, lon).tobytes()
    return image


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600 * 10000)
    return IFDRational(degrees), IFDRational(minutes), IFDRational(seconds, 10000)


def _exif(lat: float, lon: float) -> Image.Exif:
    """EXIF marking the image as synthetic, with the GPS position of the place it stands for."""
    exif = Image.Exif()
    exif[_EXIF_DESCRIPTION] = f"{SYNTHETIC_MARKER}: drawn, not photographed (swclip_core)"
    exif[_EXIF_SOFTWARE] = f"{SYNTHETIC_MARKER} generator v{GENERATOR_VERSION}"
    gps = exif.get_ifd(_EXIF_GPS_IFD)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = _dms(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = _dms(lon)
    return exif
