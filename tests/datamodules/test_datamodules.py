"""Datasets: hole exclusion, sizes, seeded split, batched loading and sharding, bad data."""

import pytest
import torch

from datamodules import IntegratorDataModule, TransitionDataModule
from datamodules.base import ShuffledBatches
from sgp_lightning import SGPError
from sgp_lightning.envs import IntegratorEnv


def test_integrator_data_respects_hole_box_and_dynamics():
    env = IntegratorEnv(name="pit", pit_radius=0.4, hole_radius=0.4)
    dm = IntegratorDataModule(env, num_samples=4000, seed=3, val_fraction=0.25)
    dm.setup()
    data = dm.all_data
    assert data["x"].shape == (4000, 2) and data["r"].shape == (4000,)
    assert dm.val_data["x"].shape[0] == 1000 and dm.train_data["x"].shape[0] == 3000
    assert not env.in_hole(data["x"]).any()
    assert data["x"].abs().max() <= 1.0 and data["u"].abs().max() <= 0.1
    assert torch.allclose(data["x_next"], data["x"] + data["u"])  # no state in the hole, so none in the pit
    assert torch.allclose(data["r"], env.reward(data["x"], data["u"]))


def test_same_seed_same_data_and_split():
    env = IntegratorEnv()
    a, b, c = (IntegratorDataModule(env, num_samples=500, seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.train_data["x"], b.train_data["x"])
    assert not torch.equal(a.train_data["x"], c.train_data["x"])


def test_stats_come_from_training_split():
    dm = IntegratorDataModule(IntegratorEnv(), num_samples=1000)
    dm.setup()
    mean, std = dm.stats["xu"]
    xu = torch.cat([dm.train_data["x"], dm.train_data["u"]], -1)
    assert torch.allclose(mean, xu.mean(0)) and torch.allclose(std, xu.std(0))


def test_shuffled_batches_cover_every_row_once_and_shard_disjointly():
    tensors = {"x": torch.arange(103).float()[:, None]}
    loader = ShuffledBatches(tensors, batch_size=10, shuffle=True, seed=0)
    rows = torch.cat([b["x"] for b in loader]).flatten()
    assert len(loader) == 11 and sorted(rows.tolist()) == list(range(103))
    assert not torch.equal(rows, torch.cat([b["x"] for b in loader]).flatten())  # new order next epoch
    shards = []
    for rank in range(2):
        part = ShuffledBatches(tensors, 10, True, 0)
        part.rank, part.world_size = rank, 2
        shards.append(set(torch.cat([b["x"] for b in part]).flatten().tolist()))
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 51


class _Given(TransitionDataModule):
    def __init__(self, data, **kwargs):
        super().__init__(**kwargs)
        self.data = data

    def load_transitions(self):
        return self.data


def _transitions(n=20):
    return {"x": torch.zeros(n, 2), "u": torch.zeros(n, 2), "x_next": torch.zeros(n, 2), "r": torch.zeros(n)}


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            lambda d: {
                **d,
                "x": torch.zeros(0, 2),
                "u": torch.zeros(0, 2),
                "x_next": torch.zeros(0, 2),
                "r": torch.zeros(0),
            },
            "empty",
        ),
        (lambda d: {**d, "x": d["x"].index_fill(0, torch.tensor([3]), float("nan"))}, "NaN"),
        (lambda d: {**d, "r": d["r"].index_fill(0, torch.tensor([5]), float("inf"))}, "NaN or infinite"),
        (lambda d: {k: v for k, v in d.items() if k != "r"}, "missing keys"),
        (lambda d: {**d, "u": torch.zeros(19, 2)}, "rows"),
        (lambda d: {**d, "x_next": torch.zeros(20, 3)}, "x_next shape"),
        (lambda d: {**d, "done": torch.zeros(20)}, "done must be a bool tensor"),
        (lambda d: {**d, "done": torch.zeros(19, dtype=torch.bool)}, "done must be a bool tensor"),
    ],
    ids=["empty", "nan", "inf", "missing", "rows", "shape", "done_dtype", "done_rows"],
)
def test_malformed_dataset_gives_one_clear_error(broken, message):
    with pytest.raises(SGPError, match=message):
        _Given(broken(_transitions())).setup()


def test_split_that_leaves_a_side_empty_is_an_error():
    with pytest.raises(SGPError, match="non-empty"):
        _Given(_transitions(2), val_fraction=0.1).setup()


def test_minmax_normalization_maps_the_training_range_to_plus_minus_one():
    """normalization=minmax: the training split's x, u and (x, u) span exactly [−1, 1] per dimension once
    normalized with the stats; zscore keeps mean 0 and std 1."""
    from sgp_lightning.normalization import Normalizer

    for kind in ("minmax", "zscore"):
        dm = IntegratorDataModule(IntegratorEnv(), num_samples=500, seed=3, normalization=kind)
        dm.setup("fit")
        for key in ("x", "u"):
            z = Normalizer(dm.train_data[key].shape[1]).set_stats(*dm.stats[key])(dm.train_data[key])
            if kind == "minmax":
                assert torch.allclose(z.amin(0), torch.full_like(z[0], -1.0), atol=1e-5)
                assert torch.allclose(z.amax(0), torch.ones_like(z[0]), atol=1e-5)
            else:
                assert torch.allclose(z.mean(0), torch.zeros_like(z[0]), atol=1e-4)
                assert torch.allclose(z.std(0), torch.ones_like(z[0]), atol=1e-4)


def test_minmax_stats_of_images_are_per_channel():
    from sgp_lightning.spaces import sample_stats

    images = torch.rand(7, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    images[:, 1] = images[:, 1] * 6 - 5  # channel 1 in [−5, 1)
    offset, scale = sample_stats(images, (2, 4, 4), "minmax")
    assert offset.shape == scale.shape == (2, 1, 1)
    for c in range(2):
        low, high = images[:, c].min(), images[:, c].max()
        assert torch.isclose(offset[c, 0, 0], (low + high) / 2) and torch.isclose(
            scale[c, 0, 0], (high - low) / 2
        )


def test_unknown_normalization_is_an_error():
    with pytest.raises(SGPError, match="normalization must be one of"):
        IntegratorDataModule(IntegratorEnv(), num_samples=100, normalization="range")


@pytest.mark.parametrize("experiment", ["pit", "d4rl/hopper_medium", "pixel_integrator_small"])
def test_train_config_normalization_reaches_the_datamodule(experiment, tmp_path):
    """`train.py normalization=minmax` reaches every domain's datamodule (one key, passed where it is built)."""
    from sgp_lightning.train import instantiate_env_and_data
    from tests.conftest import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", "normalization=minmax"], tmp_path)
    _, datamodule = instantiate_env_and_data(cfg)
    assert datamodule.normalization == "minmax"
