"""The model configs reach SGPSystem as plain Python: `_convert_: all` beside `_recursive_: false` in
conf/model/*.yaml, so the hyperparameters a checkpoint saves are plain values that load weights-only."""

from __future__ import annotations

import hydra
import pytest
from omegaconf import OmegaConf

from sgp_lightning import SGPError
from sgp_lightning.models import SGPSystem
from sgp_lightning.train import instantiate_env_and_data, instantiate_system
from tests.conftest import compose_config

PLAIN = (str, int, float, bool, type(None))


def record(**kwargs) -> dict:
    """A stand-in `_target_`: returns what Hydra would pass to SGPSystem."""
    return kwargs


def assert_plain(value, where: str = "hparams") -> None:
    """Only dicts (with string keys), lists and scalars, all the way down."""
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif type(value) is list:
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert isinstance(value, PLAIN), f"{where} is a {type(value).__name__}"


@pytest.mark.parametrize("overrides", [[], ["experiment=pixel_integrator"]], ids=["mlp", "pixel_unet"])
def test_model_config_arrives_as_plain_dicts_and_lists(overrides, tmp_path):
    """Not recursive (the system builds its parts itself), yet every nested value is converted: the parts'
    dicts, the U-Net's dict and lists, the optimizer's `_partial_` config (left uninstantiated), the env."""
    cfg = compose_config("train", overrides, tmp_path)
    received = hydra.utils.instantiate(
        cfg.model, _target_=f"{__name__}.record", state_shape=[2], action_shape=[2]
    )
    assert_plain(received, "model")
    assert received["optimizer"]["_target_"] == "torch.optim.Adam" and received["optimizer"]["_partial_"]
    assert type(received["score"]) is dict and received["score"]["num_levels"] == cfg.domain.num_levels
    assert received["env"] == OmegaConf.to_container(cfg.domain.env, resolve=True)
    if "unet" in received["dynamics"]:
        assert type(received["dynamics"]["unet"]["block_out_channels"]) is list


def test_instantiated_system_saves_plain_hyperparameters(tmp_path):
    cfg = compose_config("train", [], tmp_path)
    env, _ = instantiate_env_and_data(cfg)
    system = instantiate_system(cfg, env)
    hparams = dict(system.hparams)
    assert_plain(hparams)
    assert hparams["state_shape"] == [2] and hparams["optimizer"]["lr"] == cfg.model.optimizer.lr
    assert hparams["frozen"] == {} and hparams["part_lr"] == {}


def test_system_refuses_omegaconf_containers():
    """An OmegaConf argument would be pickled into the checkpoint's hyperparameters: refused, named."""
    env = OmegaConf.create({"_target_": "sgp_lightning.envs.IntegratorEnv"})
    with pytest.raises(
        SGPError, match="SGPSystem argument env is an OmegaConf DictConfig; pass plain values"
    ):
        SGPSystem("pit", [2], [2], env)
    with pytest.raises(SGPError, match="argument dynamics is an OmegaConf DictConfig"):
        SGPSystem("pit", [2], [2], {}, dynamics=OmegaConf.create({"hidden_dims": [8]}))
