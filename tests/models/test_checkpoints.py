"""Checkpoints load weights-only: SGPSystem.load_from_checkpoint, read_hparams (train.py's resume check), frozen
parts and plan.py refuse a file that would run code, and every other bad file is one clear SGPError."""

from __future__ import annotations

import pathlib

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.data.policies import POLICY_DIR, load_policy
from sgp_lightning.models import SGPSystem, read_hparams
from sgp_lightning.train import train
from tests.conftest import TINY, compose_config, run_cli

# One epoch, no planning or score images, no logger: the checkpoint is what matters here. The cosine
# schedule and a part learning rate put an LR scheduler and two parameter groups into the checkpoint.
FAST = [
    *TINY,
    "callbacks.planning=null",
    "callbacks.score_field=null",
    "logger=none",
    "model.lr_schedule=cosine",
    "+model.part_lr={dynamics: 0.01}",
]


class TouchOnLoad:
    """Unpickling this runs `Path(marker).touch()`: a stand-in for a payload such as os.system."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def malicious_checkpoint(real: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A real checkpoint with a code-running object in its hyperparameters; returns (file, marker)."""
    marker = tmp_path / "pwned"
    checkpoint = torch.load(real, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = TouchOnLoad(marker)
    path = tmp_path / "malicious.ckpt"
    torch.save(checkpoint, path)
    return path, marker


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny pit run (its last.ckpt and in-memory system) and a run that froze its score model."""
    root = tmp_path_factory.mktemp("checkpoints")
    _, objects = train(compose_config("train", FAST, root / "run"))
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    frozen_overrides = [*FAST, f"+model.frozen.score={ckpt}"]
    _, frozen_objects = train(compose_config("train", frozen_overrides, root / "frozen"))
    return {
        "ckpt": ckpt,
        "system": objects["system"].eval(),
        "frozen_ckpt": root / "frozen" / "checkpoints" / "last.ckpt",
        "frozen_system": frozen_objects["system"].eval(),
    }


def edited_checkpoint(trained, tmp_path, edit) -> pathlib.Path:
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


# ------------------------------------------------------------------ files the project writes
def test_trained_checkpoint_loads_weights_only_and_gives_identical_outputs(trained):
    for path in trained["ckpt"].parent.glob("*.ckpt"):  # last.ckpt and the best epoch's
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["lr_schedulers"] and checkpoint["optimizer_states"] and checkpoint["loops"]
    system = SGPSystem.load_from_checkpoint(trained["ckpt"], map_location=torch.device("cpu"))
    assert isinstance(system, SGPSystem) and not system.training and system.domain == "pit"
    assert system.hparams.optimizer == {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    reference = trained["system"]
    assert system.state_dict().keys() == reference.state_dict().keys()
    torch.manual_seed(0)
    x, u = torch.randn(16, 2), torch.randn(16, 2)
    with torch.no_grad():
        assert torch.equal(system.dynamics(x, u), reference.dynamics(x, u))
        assert torch.equal(system.reward(x, u), reference.reward(x, u))
        z = torch.cat([x, u], -1)
        assert torch.equal(system.score(z, 3), reference.score(z, 3))
    assert read_hparams(trained["ckpt"])["domain"] == "pit"


def test_checkpoint_with_a_frozen_part_loads_with_that_part_inside(trained):
    system = SGPSystem.load_from_checkpoint(trained["frozen_ckpt"])
    assert system.hparams.frozen == {"score": str(trained["ckpt"])} and system._frozen_loaded
    source = SGPSystem.load_from_checkpoint(trained["ckpt"]).score.state_dict()
    assert all(torch.equal(value, system.score.state_dict()[key]) for key, value in source.items())
    assert not any(p.requires_grad for p in system.score.parameters())
    assert "score" not in system.trainable_parts


def test_committed_behaviour_policies_load_weights_only():
    paths = sorted(POLICY_DIR.glob("*.pt"))
    assert paths
    for path in paths:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert set(payload) == {"format", "config", "state_dict", "metadata"}
        load_policy(path)


# ------------------------------------------------------------------ code in the file: refused, never run
def test_pickled_payload_would_run_code_when_loaded_unsafely(trained, tmp_path):
    """The control for the tests below: the payload does create its marker under weights_only=False."""
    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_load_from_checkpoint_refuses_code(trained, tmp_path):
    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    with pytest.raises(SGPError, match=f"refused to load checkpoint {path}: loading it would run code"):
        SGPSystem.load_from_checkpoint(path)
    assert not marker.exists()


def test_controller_from_checkpoint_refuses_code(trained, tmp_path):
    from sgp_lightning import Controller

    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    with pytest.raises(SGPError, match=f"refused to load checkpoint {path}: loading it would run code"):
        Controller.from_checkpoint(str(path), planner="sgp")
    assert not marker.exists()
    controller = Controller.from_checkpoint(
        str(trained["ckpt"]), planner="vanilla", optimizer={"iterations": 2}
    )
    assert controller.act(controller.env.tasks().x0).shape == (controller.env.num_tasks, 2)


def test_resume_check_refuses_code_before_fit(trained, tmp_path):
    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    with pytest.raises(SGPError, match="loading it would run code"):
        read_hparams(path)
    cfg = compose_config("train", [*FAST, f"ckpt_path={path}"], tmp_path / "resumed")
    with pytest.raises(SGPError, match=f"refused to load checkpoint {path}"):
        train(cfg)  # validate_config reads the checkpoint before anything is built or fitted
    assert not (tmp_path / "resumed").exists() and not marker.exists()


def test_frozen_part_refuses_code(trained, tmp_path):
    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    system = SGPSystem(**{**read_hparams(trained["ckpt"]), "frozen": {"score": str(path)}})
    with pytest.raises(SGPError, match="model.frozen.score: refused to load checkpoint .* would run code"):
        system.load_frozen_parts()
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, target, message",
    [
        ("optimizer", "os.system", "its optimizer _target_ 'os.system' is not a subclass of Optimizer"),
        ("env", "subprocess.Popen", "its env _target_ 'subprocess.Popen' is not a subclass of Env"),
        ("score", "os.system", "its hyperparameter score names a _target_"),
    ],
)
def test_hydra_targets_in_hyperparameters_are_refused(trained, tmp_path, key, target, message):
    """weights_only=True keeps code out of unpickling, but configs are instantiated: their targets are checked."""
    marker = tmp_path / "pwned"

    def edit(checkpoint):
        hparams = checkpoint["hyper_parameters"]
        hparams[key] = {**(hparams[key] or {}), "_target_": target, "_args_": [f"touch {marker}"]}

    path = edited_checkpoint(trained, tmp_path, edit)
    with pytest.raises(SGPError, match=message):
        SGPSystem.load_from_checkpoint(path)
    assert not marker.exists()


def test_plan_cli_refuses_code_with_one_error_line(trained, tmp_path):
    path, marker = malicious_checkpoint(trained["ckpt"], tmp_path)
    proc = run_cli("plan.py", f"ckpt_path={path}", f"output_dir={tmp_path / 'out'}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loading it would run code" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not marker.exists()


# ------------------------------------------------------------------ other bad files: one clear error each
def test_missing_file(tmp_path):
    with pytest.raises(SGPError, match="checkpoint not found: .*nope.ckpt"):
        SGPSystem.load_from_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_file(trained, tmp_path):
    data = trained["ckpt"].read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SGPError, match=f"cannot read checkpoint {path}: it is truncated or not a file"):
        SGPSystem.load_from_checkpoint(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(SGPError, match=f"cannot read checkpoint {path}: it is truncated or not a file"):
        SGPSystem.load_from_checkpoint(path)
    with pytest.raises(SGPError, match="cannot read checkpoint"):
        read_hparams(path)


def test_torch_file_that_is_no_checkpoint(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(SGPError, match="not an sgp-lightning SGPSystem checkpoint: it holds a list"):
        SGPSystem.load_from_checkpoint(tmp_path / "list.pt")


@pytest.mark.parametrize(
    "drop, message",
    [
        ("hyper_parameters", "has no hyper_parameters"),
        ("state_dict", "has no state_dict"),
        ("domain", "its hyper_parameters name no domain"),
        ("env", r"its hyper_parameters lack \['env'\]"),
    ],
)
def test_missing_keys(trained, tmp_path, drop, message):
    def edit(checkpoint):
        if drop in checkpoint:
            del checkpoint[drop]
        else:
            del checkpoint["hyper_parameters"][drop]

    path = edited_checkpoint(trained, tmp_path, edit)
    with pytest.raises(SGPError, match=f"{path} .*{message}"):
        SGPSystem.load_from_checkpoint(path)


def test_network_of_another_shape(trained, tmp_path):
    def other_hidden_dims(checkpoint):  # hyperparameters of a wider score network, weights of this one
        checkpoint["hyper_parameters"]["score"]["hidden_dims"] = [64, 64]

    path = edited_checkpoint(trained, tmp_path, other_hidden_dims)
    with pytest.raises(
        SGPError, match=r"does not fit .*shapes differ: score\.net\.\S+ is \[32, 4\] in the file"
    ):
        SGPSystem.load_from_checkpoint(path)

    key = next(k for k, v in trained["system"].state_dict().items() if v.ndim == 2)

    def reshaped(checkpoint):
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key].reshape(-1)
        checkpoint["state_dict"]["dynamics.extra"] = torch.zeros(1)
        del checkpoint["state_dict"]["reward.net.net.0.bias"]

    path = edited_checkpoint(trained, tmp_path, reshaped)
    with pytest.raises(SGPError) as err:
        SGPSystem.load_from_checkpoint(path)
    message = str(err.value)
    assert "missing: reward.net.net.0.bias" in message and "unexpected: dynamics.extra" in message
    assert f"shapes differ: {key} is" in message

    score = {**read_hparams(trained["ckpt"])["score"], "hidden_dims": [16]}
    with pytest.raises(SGPError, match=r"with score overridden\): unexpected: .*shapes differ"):
        SGPSystem.load_from_checkpoint(trained["ckpt"], score=score)


def test_overrides_must_be_system_arguments(trained):
    with pytest.raises(SGPError, match=r"with \['strict'\]: not SGPSystem arguments"):
        SGPSystem.load_from_checkpoint(trained["ckpt"], strict=False)
    with pytest.raises(SGPError, match="frozen parts' weights are already inside"):
        SGPSystem.load_from_checkpoint(trained["ckpt"], frozen={})
    system = SGPSystem.load_from_checkpoint(trained["ckpt"], lr_schedule="constant")
    assert system.hparams.lr_schedule == "constant"
