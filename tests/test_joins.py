"""Spatial joins (street, region, grid) against independent computations on real layers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy.spatial import cKDTree

from swclip_core.data.joins import (
    assign_grid_regions,
    grid_regions,
    join_regions,
    join_streets,
    read_polygons,
)
from swclip_core.errors import InputError
from swclip_core.geo import EARTH_RADIUS_M, haversine_m, latlon_to_unit

from .conftest import REPO

PLACES = REPO / "resources" / "sample_data" / "places"
REGIONS = REPO / "resources" / "sample_data" / "regions" / "naturalearth_admin1_gb.geojson"


def _normalise(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).str.lower().str.split().str.join(" ")


@pytest.fixture(scope="module")
def addresses() -> gpd.GeoDataFrame:
    table = pd.read_csv(PLACES / "isleofman_addresses.csv", dtype=str, keep_default_na=False)
    table["addr:street"] = table["addr:street"].replace("", None)
    lon, lat = table["lon"].astype(float), table["lat"].astype(float)
    return gpd.GeoDataFrame(
        table[["osm_id", "addr:street"]], geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326"
    )


@pytest.fixture(scope="module")
def highways() -> pd.DataFrame:
    return pd.read_csv(PLACES / "isleofman_named_highways.csv")


@pytest.fixture(scope="module")
def street_join(addresses) -> gpd.GeoDataFrame:
    return join_streets(addresses, PLACES / "isleofman_named_highways.csv", max_distance_m=50.0)


def test_isle_of_man_streets_agree_with_addr_street(street_join, addresses):
    """Street names joined from the OSM highway layer agree with the addresses' own addr:street.

    The highway layer has one representative point per OSM way, not the line itself, so a house
    halfway along a long street can be nearer another street's point. Measured on the bundled
    data (4,021 addresses with addr:street, 50 m limit): 80.0 % get a street and 70.7 % of those
    agree with addr:street (case and whitespace normalised); with a 25 m limit 44.8 % get one
    and 74.9 % of those agree. The asserts sit 5 points below the measured figures; measuring the
    limit in degrees instead of metres (tried) matches every address and agreement falls to 0.63.
    """
    truth = addresses["addr:street"].notna()
    joined = street_join["street"].notna() & truth
    coverage = joined.sum() / truth.sum()
    agree = (
        _normalise(street_join["street"][joined]) == _normalise(addresses["addr:street"][joined])
    ).mean()
    print(f"Isle of Man street join: coverage {coverage:.3f}, agreement {agree:.3f}")
    assert coverage >= 0.75
    assert agree >= 0.65


def test_street_join_respects_the_distance_in_metres(street_join, addresses, highways):
    """Each filled street is the nearest named point, within 50 m great-circle; others are not.

    Independent: nearest neighbours on the unit sphere (KD-tree of 3D vectors), chord -> arc.
    """
    tree = cKDTree(latlon_to_unit(highways["lat"].to_numpy(), highways["lon"].to_numpy()))
    chord, nearest = tree.query(
        latlon_to_unit(addresses.geometry.y.to_numpy(), addresses.geometry.x.to_numpy())
    )
    distance = 2 * EARTH_RADIUS_M * np.arcsin(np.clip(chord / 2, 0, 1))
    filled = street_join["street"].notna().to_numpy()
    # Ellipsoidal metres (the join's projection) and spherical haversine differ by < 0.5 %.
    assert (distance[filled] <= 50.0 * 1.005).all()
    assert (distance[~filled] > 50.0 * 0.995).all()
    clear = filled & (distance < 49)
    nearest_name = highways["name"].to_numpy()[nearest[clear]]
    # Ties between points at the same distance may resolve either way; they are rare.
    assert (street_join["street"].to_numpy()[clear] == nearest_name).mean() > 0.99


def test_street_join_is_the_same_in_british_national_grid(addresses, street_join):
    projected = addresses.to_crs("EPSG:27700")
    joined = join_streets(projected, PLACES / "isleofman_named_highways.csv")
    assert joined.crs == projected.crs
    assert joined["street"].fillna("").equals(street_join["street"].fillna(""))


def test_street_join_keeps_user_values_and_input(addresses):
    samples = addresses.copy()
    samples["street"] = None
    samples.loc[samples.index[:10], "street"] = "Mine"
    samples.attrs["skipped"] = [{"record": "x", "reason": "y"}]
    before = samples.copy()
    joined = join_streets(samples, PLACES / "isleofman_named_highways.csv")
    pd.testing.assert_frame_equal(samples, before)
    assert (joined["street"][:10] == "Mine").all()
    assert joined.attrs["skipped"] == samples.attrs["skipped"]
    entry = joined.attrs["joins"][-1]
    assert entry["already_set"] == 10
    assert entry["filled"] == joined["street"][10:].notna().sum()
    assert entry["filled"] + entry["unmatched"] == len(samples) - 10


def _gb_points(n: int = 400, seed: int = 3) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-8.0, 2.0, n)
    lat = rng.uniform(49.8, 59.0, n)
    return gpd.GeoDataFrame(
        {"sample_id": [str(i) for i in range(n)]},
        geometry=gpd.points_from_xy(lon, lat),
        crs="EPSG:4326",
    )


def test_region_join_matches_a_contains_loop():
    polygons = gpd.read_file(REGIONS)
    points = _gb_points()
    # Samples in British National Grid: the join must bring them to the polygons' CRS.
    joined = join_regions(points.to_crs("EPSG:27700"), REGIONS)
    expected = []
    for point in points.geometry:
        hit = next(
            (
                name
                for name, poly in zip(polygons["name"], polygons.geometry, strict=True)
                if poly.covers(point)
            ),
            None,
        )
        expected.append(hit)
    assert joined["region"].tolist() == expected
    assert 0 < sum(e is None for e in expected) < len(expected)  # sea points and land points
    entry = joined.attrs["joins"][-1]
    assert entry["name_field"] == "name"
    assert entry["filled"] == sum(e is not None for e in expected)


def test_region_join_never_overwrites_and_leaves_outside_points_empty():
    points = _gb_points(60)
    points["city"] = None
    points.loc[points.index[:5], "city"] = "Kept"
    atlantic = gpd.GeoDataFrame(
        {"sample_id": ["sea"], "city": [None]},
        geometry=[shapely.Point(-20.0, 50.0)],
        crs="EPSG:4326",
    )
    samples = pd.concat([points, atlantic], ignore_index=True)
    joined = join_regions(samples, REGIONS, target="city")
    assert (joined["city"][:5] == "Kept").all()
    assert joined["city"].iloc[-1] is None
    assert "region" not in joined  # only the asked-for field is filled
    assert samples["city"].iloc[5:].isna().all()  # input untouched


def test_region_layer_problems_are_input_errors(tmp_path):
    points = _gb_points(5)
    polygons = gpd.read_file(REGIONS)
    with pytest.raises(InputError, match="no coordinate reference system"):
        join_regions(points, polygons.set_crs(None, allow_override=True))
    shapefile = tmp_path / "nocrs.shp"
    with pytest.warns(UserWarning, match="crs"):
        polygons.head(3).set_crs(None, allow_override=True).to_file(shapefile)
    with pytest.raises(InputError, match="no coordinate reference system"):
        read_polygons(shapefile)
    lines = polygons.head(3).copy()
    lines.geometry = lines.boundary
    with pytest.raises(InputError, match="need polygons"):
        join_regions(points, lines)
    with pytest.raises(InputError, match="Fields: iso_a2, name"):
        join_regions(points, REGIONS, name_field="NAME_1")
    with pytest.raises(InputError, match="does not exist"):
        join_regions(points, tmp_path / "missing.gpkg")
    with pytest.raises(InputError, match="'region' or 'city'"):
        join_regions(points, REGIONS, target="street")
    numbers = polygons[["geometry"]].assign(code=range(len(polygons)))
    with pytest.raises(InputError, match="no text field"):
        join_regions(points, numbers)


def test_lad_2013_names_agree_with_os_open_names(shared_data):
    """Districts joined from the ONS LAD 2013 polygons agree with OS Open Names' own district.

    OS Open Names gives each road/place its unitary authority (county_unitary); that is an
    independent truth for the point-in-polygon join. The one measured disagreement of 964 is a
    name spelled in Gaelic by one source and in English by the other (Na h-Eileanan an Iar /
    Eilean Siar).
    """
    places = pd.read_csv(shared_data / "places" / "os_open_names_roads_places.csv")
    samples = gpd.GeoDataFrame(
        places, geometry=gpd.points_from_xy(places["lon"], places["lat"]), crs="EPSG:4326"
    )
    joined = join_regions(samples, shared_data / "regions" / "gb_lad_2013.geojson")
    assert joined.attrs["joins"][-1]["name_field"] == "LAD13NM"  # ONS field detected
    agree = [
        region is not None and region in truth
        for region, truth in zip(joined["region"], places["county_unitary"], strict=True)
    ]
    assert np.mean(agree) >= 0.995


def test_grid_cells_are_square_in_metres_and_hold_their_samples(addresses):
    sample = addresses.iloc[::20]
    cells = grid_regions(sample, cell_m=2000.0)
    assert cells.crs.to_epsg() == 4326
    assert cells["n"].sum() == len(sample) and cells["region"].is_unique
    for polygon in cells.geometry.head(20):
        lons, lats = (np.asarray(v) for v in polygon.exterior.coords.xy)
        # Perimeter along the densified edges and diagonal, by haversine: a 2 km square.
        steps = haversine_m(lats[:-1], lons[:-1], lats[1:], lons[1:])
        assert steps.sum() == pytest.approx(4 * 2000.0, rel=0.01)
        # Each side is densified into 8 edges: vertex 16 is the corner opposite vertex 0.
        assert len(lats) == 33
        diagonal = haversine_m(lats[0], lons[0], lats[16], lons[16])
        assert diagonal == pytest.approx(2000.0 * np.sqrt(2), rel=0.01)
    assigned = assign_grid_regions(sample, 2000.0)
    by_polygon = gpd.sjoin(sample, cells, predicate="within")
    by_polygon = by_polygon[~by_polygon.index.duplicated()]
    agree = (assigned.loc[by_polygon.index, "region"] == by_polygon["region"]).mean()
    assert agree > 0.99  # points on a cell edge may sit on either side of the reprojected edge
    assert assigned.attrs["joins"][-1]["filled"] == len(sample)
