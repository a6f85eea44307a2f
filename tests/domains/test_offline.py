"""Your own data without a simulator (`experiment=offline`): arrays, .npz and Minari datasets written by the
collector (arrow and HDF5 storage) train a tiny system, plan with the Controller and evaluate against held-out
episodes; malformed data fails with one clear error; the README's walkthrough runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from sgp_lightning import Controller
from sgp_lightning.data.collect import main as collect_main
from sgp_lightning.data.d4rl import read_dataset
from sgp_lightning.data.offline import load_offline, register_arrays
from sgp_lightning.envs import OfflineEnv
from sgp_lightning.envs.mujoco import mujoco_task
from sgp_lightning.errors import SGPError
from tests.conftest import ONE_EPOCH, ROOT, compose_config

N_OBS, N_ACT = 3, 2
TINY_OFFLINE = [
    "experiment=offline",
    "domain.datamodule.batch_size=128",
    "domain.evaluator.num_tasks=4",
    "domain.evaluator.max_windows=50",
    "model.dynamics.hidden_dims=[32,32]",
    "model.reward.hidden_dims=[32,32]",
    "model.score.hidden_dims=[32,32]",
    "planner.optimizer.iterations=3",
    *[o for o in ONE_EPOCH if not o.startswith("trainer.max_epochs")],
]


def linear_arrays(episodes=12, steps=10, seed=0):
    """d3rlpy-style rows of a linear system x' = x + B u, reward −‖x‖², each episode ending at a terminal."""
    rng = np.random.default_rng(seed)
    b = np.array([[0.1, 0.0], [0.0, 0.1], [0.05, -0.05]], np.float32)
    u = rng.uniform(-0.5, 0.5, (episodes, steps, N_ACT)).astype(np.float32)
    x = np.zeros((episodes, steps, N_OBS), np.float32)
    x[:, 0] = rng.normal(size=(episodes, N_OBS))
    for t in range(steps - 1):
        x[:, t + 1] = x[:, t] + u[:, t] @ b.T
    terminals = np.zeros((episodes, steps), bool)
    terminals[:, -1] = True
    return {
        "observations": x.reshape(-1, N_OBS),
        "actions": u.reshape(-1, N_ACT),
        "rewards": -(x**2).sum(-1).reshape(-1),
        "terminals": terminals.reshape(-1),
    }


def train_offline(tmp_path, dataset: str, *overrides):
    from sgp_lightning.train import train

    run = tmp_path / "run"
    overrides = overrides or ("trainer.max_epochs=1",)
    metrics, objects = train(
        compose_config("train", [*TINY_OFFLINE, f"domain.env.dataset='{dataset}'", *overrides], run)
    )
    return run / "checkpoints" / "last.ckpt", metrics, objects


def test_arrays_from_python_train_and_plan_with_the_controller(tmp_path):
    arrays = linear_arrays()
    key = register_arrays(**arrays)
    data = load_offline(key)
    # Without next_observations, x' is the next row of the episode and each episode's last row is dropped.
    x = arrays["observations"].reshape(12, 10, N_OBS)
    np.testing.assert_array_equal(data["observations"], x[:, :-1].reshape(-1, N_OBS))
    np.testing.assert_array_equal(data["next_observations"], x[:, 1:].reshape(-1, N_OBS))
    np.testing.assert_array_equal(data["episodes"], np.repeat(np.arange(12), 9))
    assert data["timeouts"].sum() == 12 and not data["terminals"].any()

    ckpt, metrics, objects = train_offline(tmp_path, key)
    env, datamodule = objects["env"], objects["datamodule"]
    assert (env.state_dim, env.action_dim) == (N_OBS, N_ACT)
    np.testing.assert_allclose(env.action_low, arrays["actions"].min(0))  # inferred: no declared range
    # Validation holds out whole episodes: 10% of 12 → 1 episode of 9 transitions, none of it in training.
    held = torch.from_numpy(env.held_out())
    assert len(datamodule.val_data["x"]) == 9 and held.sum() == 9
    for name in ("plan/predicted_return", "plan/data_return", "plan/model_error", "plan/distance_exact",
                 "plan/distance_smoothed_sq"):  # fmt: skip
        assert np.isfinite(metrics[name]), name

    # plan.py without a simulator: the plans from held-out states in trajectories.npz, the model-error curve.
    from sgp_lightning.plan import plan

    out = tmp_path / "plan"
    payload = plan(compose_config("plan", [f"ckpt_path={ckpt}", "planner_set=d4rl", "methods=[sgp]",
                                           "num_tasks=4", "planners.sgp.optimizer.iterations=2"], out))  # fmt: skip
    saved = np.load(out / "trajectories.npz", allow_pickle=False)
    assert sorted(saved.files) == ["sgp/actions", "sgp/planned_states"]
    assert saved["sgp/actions"].shape == (4, 5, N_ACT) and saved["sgp/planned_states"].shape == (4, 6, N_OBS)
    assert len(payload["methods"]["sgp"]["model_error_horizon"]) == 5
    assert (out / "model_error_horizon.png").stat().st_size > 0

    controller = Controller.from_checkpoint(str(ckpt), planner="sgp", optimizer={"iterations": 3})
    assert controller.env.dataset == key and controller.env.action_high == env.action_high
    obs = arrays["observations"][:5]
    actions = controller.act(obs)
    assert isinstance(actions, np.ndarray) and actions.shape == (5, N_ACT)
    assert (actions >= np.float32(env.action_low)).all() and (actions <= np.float32(env.action_high)).all()


def test_held_out_model_error_is_exact_for_a_known_model(tmp_path):
    """With dynamics that are exact on the data (the true linear map), the error curve is 0 at every step;
    with dynamics x' = x, it is ‖Σ_k B u_k‖ averaged over the windows, computed here independently."""
    from sgp_lightning.planning.held_out import model_error_horizon, window_starts

    arrays = linear_arrays()
    data = load_offline(register_arrays(**arrays))
    held = np.zeros(len(data["episodes"]), bool)
    held[data["episodes"] >= 10] = True
    starts = window_starts(held, data["episodes"], 4)
    assert len(starts) == 2 * (9 - 4 + 1)
    x, u, x_next = (torch.from_numpy(data[k]) for k in ("observations", "actions", "next_observations"))
    b = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.05, -0.05]])

    class Rollout:
        def __init__(self, step):
            self.step = step

        def rollout(self, x0, actions):
            states = [x0]
            for t in range(actions.shape[1]):
                states.append(self.step(states[-1], actions[:, t]))
            return torch.stack(states, 1)

    exact = model_error_horizon(Rollout(lambda s, a: s + a @ b.T), x, u, x_next, starts, 4)
    assert torch.allclose(exact, torch.zeros(4), atol=1e-5)
    still = model_error_horizon(Rollout(lambda s, a: s), x, u, x_next, starts, 4)
    expected = [
        np.mean([np.linalg.norm(arrays_u[: k + 1].sum(0) @ b.numpy().T) for arrays_u in
                 [data["actions"][s : s + 4] for s in starts]])
        for k in range(4)
    ]  # fmt: skip
    np.testing.assert_allclose(still.numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("storage", ["arrow", "hdf5"])
def test_collector_minari_dataset_trains_and_plans(tmp_path, monkeypatch, capsys, storage):
    """The collector's Minari dataset holds the same rows as its D4RL file of the same seed, keeps D4RL's
    reference returns and the env spec (read back by minari itself), and trains and plans offline."""
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    common = ["env=hopper", "dataset=random", "n=400", "num_envs=2", "seed=3"]
    collect_main([*common, f"output={tmp_path / 'ref.hdf5'}"])
    collect_main([*common, "format=minari", f"minari_storage={storage}"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == str(tmp_path / "minari" / "hopper-random-v5")

    dataset = minari.load_dataset("hopper-random-v5")
    task = mujoco_task("hopper")
    metadata = dataset.storage.metadata
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (task.ref_min_score, task.ref_max_score)
    assert dataset.spec.env_spec.id == "Hopper-v5" and metadata["data_format"] == storage
    assert dataset.total_steps == 400 and metadata["return_mean"] == summary["return_mean"]
    reference, data = read_dataset(tmp_path / "ref.hdf5"), read_dataset("hopper-random-v5")
    for key in ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(data[key], reference[key], err_msg=key)

    ckpt, metrics, objects = train_offline(tmp_path, "hopper-random-v5")
    env = objects["env"]
    assert env.action_low == [-1.0] * 3 and env.action_high == [1.0] * 3  # the Minari action space
    assert (env.ref_min_score, env.ref_max_score) == (task.ref_min_score, task.ref_max_score)
    assert np.isfinite(metrics["plan/predicted_return"])
    controller = Controller.from_checkpoint(str(ckpt), planner="vanilla", optimizer={"iterations": 2})
    assert controller.act(torch.from_numpy(data["observations"][0])).shape == (3,)


def test_npz_with_next_observations_and_declared_range(tmp_path):
    arrays = linear_arrays()
    arrays["next_observations"] = np.roll(arrays["observations"], -1, 0)
    path = tmp_path / "log.npz"
    np.savez(path, **arrays)
    env = OfflineEnv(dataset=str(path), action_low=-0.5, action_high=0.5)
    assert env.action_low == [-0.5, -0.5] and len(env.data["rewards"]) == 120  # every row is a transition
    # The checkpoint's config rebuilds the env without reading the data.
    rebuilt = OfflineEnv(**{k: v for k, v in env.saved_config({"dataset": "gone.npz"}).items()})
    assert (rebuilt.state_dim, rebuilt.action_dim, rebuilt.action_low) == (3, 2, [-0.5, -0.5])
    clamped = rebuilt.normalize_action(torch.tensor([[2.0, -2.0]]))
    assert clamped.tolist() == [[0.5, -0.5]]


def _write(tmp_path, arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


def _ragged(a):
    a["rewards"] = a["rewards"][:-3]


def _nan(a):
    a["observations"][7, 1] = np.nan


def _empty(a):
    for key in a:
        a[key] = a[key][:0]


def _one_episode(a):
    a["terminals"][:] = False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("rewards"), r"missing keys \['rewards'\]"),
        (_ragged, "'rewards' has 117 rows but 'observations' has 120"),
        (_nan, r"1 of 120 rows have NaN .* 'observations' \(first at row 7\)"),
        (_empty, "is empty"),
        (_one_episode, "1 episode.*needs at least 2"),
    ],
)
def test_malformed_npz_fails_clearly(tmp_path, change, message):
    arrays = linear_arrays()
    change(arrays)
    with pytest.raises(SGPError, match=message):
        OfflineEnv(dataset=_write(tmp_path, arrays)).held_out()


def test_actions_outside_the_declared_range_fail(tmp_path):
    path = _write(tmp_path, linear_arrays())
    with pytest.raises(SGPError, match=r"actions lie outside the declared range"):
        OfflineEnv(dataset=path, action_low=-0.1, action_high=0.1)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    arrays = linear_arrays()
    arrays["rewards"] = np.array([object()] * 120, dtype=object)
    with pytest.raises(SGPError, match="not a readable .npz of numeric arrays"):
        OfflineEnv(dataset=_write(tmp_path, arrays))


def test_readme_walkthrough_from_collector_to_controller(tmp_path, monkeypatch):
    """The README's "Your own data" commands and code, with smaller sizes and paths in tmp_path."""
    from sgp_lightning.train import train

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Your own data", 1)[1].split("\n## ", 1)[0]
    (commands,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    collect, train_command = commands.strip().splitlines()
    monkeypatch.chdir(tmp_path)
    prefix = "python -m sgp_lightning.data.collect "
    assert collect.startswith(prefix) and train_command.startswith("python train.py ")
    collect_main(collect.removeprefix(prefix).replace("n=20000", "n=400").split())
    run = tmp_path / "run"
    overrides = train_command.removeprefix("python train.py ").replace("max_epochs=5", "max_epochs=1").split()
    train(compose_config("train", [*overrides, *TINY_OFFLINE[1:]], run))
    ckpt = str(run / "checkpoints" / "last.ckpt")
    code = example.replace("logs/train/runs/RUN/checkpoints/last.ckpt", ckpt)
    code = code.replace(
        'planner="sgp")', 'planner="sgp", optimizer={"iterations": 2}, mpc={"iterations": 2})'
    )
    assert code.count(ckpt) == 1 and '"iterations": 2' in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["actions"].shape == (4, 3) and np.abs(scope["actions"]).max() <= 1.0
