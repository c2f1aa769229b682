"""Location-as-text captions: the example of docs/method.md verbatim, missing fields left out,
configurable and JSON-serialisable templates, actionable errors for bad coordinates."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from swclip_core.captions import (
    DEFAULT_TEMPLATE,
    CaptionTemplate,
    captions_for,
    location_caption,
)
from swclip_core.errors import InputError

# The example caption of docs/method.md, "Captions" (named when the method's specification lived
# outside the repository).
SPEC_EXAMPLE = (
    "Street: Aalin Court, City: Ballasalla, Country: Isle of Man. Lat: 54.09205, Lon: -4.62742."
)
MISSING = [None, math.nan, np.nan, np.float32("nan"), pd.NA, "", "   ", "None", "nan"]


def reference_caption(lat, lon, street=None, city=None, country=None, precision=5):
    """Straight from docs/method.md, "Captions": present fields as 'Label: value', then the
    coordinates."""
    parts = []
    for label, value in (("Street", street), ("City", city), ("Country", country)):
        if isinstance(value, str) and value.strip() and value not in ("None", "nan"):
            parts.append(f"{label}: {value.strip()}")
    lat_s, lon_s = (
        np.format_float_positional(v, precision=precision, unique=False, trim="k")
        for v in (lat, lon)
    )
    coords = f"Lat: {lat_s}, Lon: {lon_s}."
    return (", ".join(parts) + ". " + coords) if parts else coords


def assert_clean(caption):
    assert "None" not in caption and "nan" not in caption.lower() and "<NA>" not in caption


def test_spec_example_verbatim():
    got = location_caption(
        54.092051, -4.627419, street="Aalin Court", city="Ballasalla", country="Isle of Man"
    )
    assert got == SPEC_EXAMPLE


def test_coordinates_only():
    assert location_caption(54.092051, -4.627419) == "Lat: 54.09205, Lon: -4.62742."


@pytest.mark.parametrize("missing", MISSING, ids=repr)
def test_missing_fields_are_left_out(missing):
    got = location_caption(54.09205, -4.62742, street=missing, city="Ballasalla", country=missing)
    assert got == "City: Ballasalla. Lat: 54.09205, Lon: -4.62742."
    assert_clean(got)
    all_missing = location_caption(1.0, 2.0, street=missing, city=missing, country=missing)
    assert all_missing == "Lat: 1.00000, Lon: 2.00000."


def test_random_field_combinations_match_reference():
    rng = np.random.default_rng(0)
    names = ["Main Street", "  Rue de la Paix ", "Nan", "Ballasalla", None, "", math.nan]
    for _ in range(200):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        street, city, country = (names[i] for i in rng.integers(0, len(names), 3))
        got = location_caption(lat, lon, street=street, city=city, country=country)
        assert got == reference_caption(lat, lon, street, city, country)
        assert "None" not in got and "nan" not in got


def test_precision_and_labels_are_configurable_and_round_trip_through_json():
    template = CaptionTemplate(
        fields=(("city", "Town"), ("country", "Land")), precision=2, lat_label="φ", lon_label="λ"
    )
    got = location_caption(51.5074, -0.1278, street="Ignored St", city="London", template=template)
    assert got == "Town: London. φ: 51.51, λ: -0.13."
    reloaded = CaptionTemplate.from_dict(json.loads(json.dumps(dataclasses.asdict(template))))
    assert reloaded == template
    assert location_caption(51.5074, -0.1278, city="London", template=reloaded) == got
    assert CaptionTemplate.from_dict(dataclasses.asdict(DEFAULT_TEMPLATE)) == DEFAULT_TEMPLATE


def test_extra_template_fields_are_filled_by_keyword():
    template = CaptionTemplate(fields=(("district", "District"), ("city", "City")))
    got = location_caption(1.0, 2.0, city="X", district="Centre", template=template)
    assert got == "District: Centre, City: X. Lat: 1.00000, Lon: 2.00000."


def test_negative_zero_is_not_printed():
    assert location_caption(-0.000001, -0.000004) == "Lat: 0.00000, Lon: 0.00000."


@pytest.mark.parametrize("bad", [-1, 1.5, "5"])
def test_bad_precision_is_rejected(bad):
    with pytest.raises(InputError, match="precision"):
        CaptionTemplate(precision=bad)


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (math.nan, 0.0, "latitude"),
        (None, 0.0, "latitude"),
        (0.0, math.inf, "longitude"),
        (530000.0, 180000.0, "EPSG:4326"),
        (10.0, 181.0, "longitude"),
    ],
)
def test_bad_coordinates_raise_input_error(lat, lon, message):
    with pytest.raises(InputError, match=message):
        location_caption(lat, lon)


def test_captions_for_dataframe_matches_reference():
    df = pd.DataFrame(
        {
            "lat": [54.092051, 51.5, -33.8688, 0.0],
            "lon": [-4.627419, -0.12, 151.2093, 0.0],
            "street": ["Aalin Court", None, "George St", np.nan],
            "city": ["Ballasalla", "London", "", np.nan],
            "country": ["Isle of Man", "United Kingdom", "Australia", None],
        },
        index=[10, 11, 12, 13],
    )
    got = captions_for(df)
    assert got[0] == SPEC_EXAMPLE
    for caption, row in zip(got, df.itertuples(), strict=True):
        assert caption == reference_caption(row.lat, row.lon, row.street, row.city, row.country)
        assert_clean(caption)


def test_captions_for_optional_columns_absent():
    df = pd.DataFrame({"lat": [1.0, 2.0], "lon": [3.0, 4.0], "city": ["A", None]})
    assert captions_for(df) == [
        "City: A. Lat: 1.00000, Lon: 3.00000.",
        "Lat: 2.00000, Lon: 4.00000.",
    ]


def test_captions_for_string_columns_from_astype_str():
    # A careless astype(str) turns missing values into "nan"/"None"; they stay missing.
    df = pd.DataFrame({"lat": [1.0], "lon": [3.0], "city": [np.nan], "street": [None]})
    df = df.astype({"city": str, "street": str})
    assert captions_for(df) == ["Lat: 1.00000, Lon: 3.00000."]


def test_captions_for_requires_lat_lon_and_names_the_record():
    with pytest.raises(InputError, match="'lon'"):
        captions_for(pd.DataFrame({"lat": [1.0], "x": [2.0]}))
    with pytest.raises(InputError, match="Record 'b'"):
        captions_for(pd.DataFrame({"lat": [1.0, np.nan], "lon": [2.0, 3.0]}, index=["a", "b"]))
