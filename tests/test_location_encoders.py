"""The SW loss for every location encoder (docs/method.md, "Location encoders"): spatial weights
that extend to a queue of past locations, the loss over (B, B + Q) logits, both against loop
implementations of the formulas; the hybrid encoder; the objectives' names and presets."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from swclip_core.config import SpatialKernel, TrainConfig
from swclip_core.errors import InputError
from swclip_core.losses import Candidates, LossWeights, spatial_weights, sw_infonce, swclip_loss
from swclip_core.models.geoclip import official_weights_path, remap_official_keys
from swclip_core.objectives.registry import REGISTRY, objective_for
from swclip_core.objectives.spatial import SpatialLoss

from .reference import ref_haversine
from .test_losses import ref_fairness, ref_log_softmax, ref_nc

B, Q = 5, 4


def ref_weight(a, b, scale, street_bonus, city_bonus):
    """One w_ij of docs/method.md, "Spatial weights" (exponential kernel, no cutoff)."""
    d = ref_haversine(a["lat"], a["lon"], b["lat"], b["lon"])
    w = math.exp(-d / scale)
    if a["street"] == b["street"] != -1:
        w += street_bonus
    if a["city"] == b["city"] != -1:
        w += city_bonus
    return w


def ref_queue_sw_infonce(logits, w):
    """½[image → location over every unmasked column of the B + Q; location → image over the
    batch's (B, B) block], with y = rows of w over their sums (masked entries have w = 0)."""
    n, m = logits.shape
    forward = 0.0
    for i in range(n):
        kept = [j for j in range(m) if np.isfinite(logits[i][j])]
        logp = ref_log_softmax([logits[i][j] for j in kept])
        total = sum(w[i][j] for j in kept)
        forward -= sum(w[i][kept[k]] / total * logp[k] for k in range(len(kept)))
    backward = 0.0
    for j in range(n):
        column = [logits[i][j] for i in range(n)]
        logp = ref_log_softmax(column)
        total = sum(w[i][j] for i in range(n))
        backward -= sum(w[i][j] / total * logp[i] for i in range(n))
    return 0.5 * (forward / n + backward / n)


@pytest.fixture
def places():
    rng = np.random.default_rng(7)
    n = 12
    return pd.DataFrame(
        {
            "lat": 54.15 + rng.normal(0, 0.004, n),
            "lon": -4.48 + rng.normal(0, 0.006, n),
            "street": ["A", "A", "B", None, "C", "C", "A", "B", None, "D", "D", "A"],
            "city": ["X", "X", "X", "Y", "Y", None, "X", "Y", "Y", "X", None, "X"],
            "region": ["r1", "r1", "r2", "r2", "r1", "r3", "r3", None, "r2", "r1", "r2", "r3"],
        }
    )


def test_spatial_weights_extend_to_queued_locations(places):
    rows = places.iloc[:B]
    extra = places.iloc[B : B + Q]
    codes = {c: pd.factorize(places[c], use_na_sentinel=True)[0] for c in ("street", "city")}
    w = spatial_weights(
        torch.tensor(rows["lat"].to_numpy()),
        torch.tensor(rows["lon"].to_numpy()),
        scale_m=300.0,
        cutoff_m=None,
        street=torch.tensor(codes["street"][:B]),
        city=torch.tensor(codes["city"][:B]),
        street_bonus=0.5,
        city_bonus=0.2,
        extra=Candidates(
            torch.tensor(extra["lat"].to_numpy()),
            torch.tensor(extra["lon"].to_numpy()),
            torch.tensor(codes["street"][B : B + Q]),
            torch.tensor(codes["city"][B : B + Q]),
        ),
    )
    assert w.shape == (B, B + Q)
    point = {
        i: {"lat": places.lat[i], "lon": places.lon[i]}
        | {c: int(codes[c][i]) for c in ("street", "city")}
        for i in range(B + Q)
    }
    expected = [
        [ref_weight(point[i], point[j], 300.0, 0.5, 0.2) for j in range(B + Q)] for i in range(B)
    ]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)


def test_the_queue_loss_matches_the_loop_formulas(places):
    """SpatialLoss on a batch and a queue that holds two of the batch's own samples (masked) and
    a duplicate of another one: sw_infonce, L_nc and L_fair as docs/method.md writes them."""
    config = TrainConfig(
        kernel=SpatialKernel(scale_m=400.0, street_bonus=0.5, city_bonus=0.1),
        lambda_nc=0.7,
        lambda_fair=2.0,
        nc_temperature=0.2,
    )
    spatial = SpatialLoss(places, config)
    index = torch.tensor([0, 1, 2, 3, 4])
    queued = torch.tensor([1, 7, 3, 9, 2, 11])  # 1, 3 and 2 are in the batch
    rng = np.random.default_rng(1)
    img, loc = rng.normal(size=(B, 6)), rng.normal(size=(B + len(queued), 6))
    logits = (
        8.0
        * (img / np.linalg.norm(img, axis=1, keepdims=True))
        @ (loc / np.linalg.norm(loc, axis=1, keepdims=True)).T
    )
    own = index.numpy()[:, None] == queued.numpy()[None, :]
    logits[:, B:][own] = -np.inf

    w = spatial.weights(index, queued).double().numpy()
    codes = {name: getattr(spatial, name).numpy() for name in ("street", "city", "region")}
    columns = np.r_[index.numpy(), queued.numpy()]
    point = {
        i: {"lat": places.lat[i], "lon": places.lon[i], **{c: codes[c][i] for c in codes}}
        for i in set(columns)
    }
    for a, i in enumerate(index.tolist()):
        for b, j in enumerate(columns.tolist()):
            expected = 0.0 if b >= B and i == j else ref_weight(point[i], point[j], 400.0, 0.5, 0.1)
            assert w[a, b] == pytest.approx(expected, rel=1e-6)

    total, parts = spatial(
        index,
        torch.tensor(img),
        torch.tensor(loc[:B]),
        torch.tensor(logits),
        queued,
    )
    block = w[:, :B]
    sw = ref_queue_sw_infonce(logits, w)
    nc = 0.5 * (ref_nc(img, block, 0.2) + ref_nc(loc[:B], block, 0.2))
    fair = ref_fairness(logits[:, :B], codes["region"][index.numpy()])
    assert fair > 0
    assert parts["sw_infonce"] == pytest.approx(sw, rel=1e-6)
    assert parts["nc"] == pytest.approx(nc, rel=1e-6)
    assert parts["fairness"] == pytest.approx(fair, rel=1e-6)
    assert total.item() == pytest.approx(sw + 0.7 * nc + 2.0 * fair, rel=1e-6)


def test_without_a_queue_the_loss_is_the_swclip_loss(places):
    config = TrainConfig(kernel=SpatialKernel(scale_m=400.0))
    spatial = SpatialLoss(places, config)
    index = torch.arange(B)
    rng = np.random.default_rng(2)
    img, loc = torch.tensor(rng.normal(size=(B, 4))), torch.tensor(rng.normal(size=(B, 4)))
    logits = 5.0 * torch.nn.functional.normalize(img) @ torch.nn.functional.normalize(loc).T
    ours, _ = spatial(index, img, loc, logits, torch.tensor([], dtype=torch.long))
    w = spatial.weights(index)
    theirs, _ = swclip_loss(logits, img, loc, w, spatial.region[index], LossWeights())
    assert ours.item() == theirs.item()


def test_queue_infonce_with_one_hot_weights_is_geoclips_cross_entropy():
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=(B, B + Q)) * 3)
    logits[1, B + 2] = -math.inf
    w = torch.cat((torch.eye(B), torch.zeros(B, Q)), dim=1).double()
    image_to_location = torch.nn.functional.cross_entropy(logits, torch.arange(B))
    location_to_image = torch.nn.functional.cross_entropy(logits[:, :B].T, torch.arange(B))
    got = sw_infonce(logits, w)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(0.5 * (image_to_location + location_to_image).item())


def test_every_encoder_and_loss_pair_names_one_objective():
    pairs = {(r.encoder, r.loss): name for name, r in REGISTRY.items() if r.encoder}
    assert len(pairs) == 6
    assert objective_for("text", "sw") == "swclip"
    assert objective_for("gps", "infonce") == "geoclip"
    assert objective_for("gps", "sw") == "swgeo"
    assert objective_for("hybrid", "sw") == "hybrid"
    with pytest.raises(InputError, match="--location-encoder"):
        objective_for("satellite", "sw")


def test_hybrid_model_starts_from_the_official_gps_weights_and_reads_captions():
    from swclip_core.models import create_backbone
    from swclip_core.models.hybrid import HybridModel

    official = remap_official_keys(
        torch.load(official_weights_path(), map_location="cpu", weights_only=True)
    )
    backbone = create_backbone("swclip-lite", device=torch.device("cpu"))
    for combine in ("sum", "concat"):
        model = HybridModel(backbone, combine=combine).eval()
        state = model.location_encoder.state_dict()
        for key, value in official.items():
            assert torch.equal(state[key], value), key
        table = pd.DataFrame(
            {
                "lat": [54.15, 54.15],
                "lon": [-4.48, -4.48],
                "caption": ["Strand Street, Douglas, Isle of Man", "Isle of Man"],
            }
        )
        emb = model.embed_locations(table, torch.device("cpu"))
        assert emb.shape == (2, 512)
        assert torch.allclose(emb.norm(dim=1), torch.ones(2))
        # same coordinates, other names: the caption counts
        assert not torch.allclose(emb[0], emb[1], atol=1e-3)
        trained = model.trainable_state()
        assert any(k.startswith("backbone.") for k in trained)  # the text layers that train
        assert not any(".visual." in k for k in trained)  # never the frozen image tower
