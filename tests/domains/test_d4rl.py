"""D4RL layout: files written independently in D4RL's exact layout are read correctly; malformed files fail
clearly; the collector writes that layout; behaviour policies load, sample and reproduce their returns."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from datamodules import D4RLDataModule
from sgp_lightning.data.collect import main as collect_main
from sgp_lightning.data.d4rl import episode_returns, read_dataset
from sgp_lightning.data.policies import (
    TanhGaussianPolicy,
    committed_policy_path,
    load_policy,
    save_policy,
)
from sgp_lightning.data.rollout import evaluate_policy
from sgp_lightning.envs import MujocoEnv
from sgp_lightning.envs.mujoco import mujoco_task
from sgp_lightning.errors import SGPError
from tests.conftest import ONE_EPOCH, run_cli

OBS, ACT = 11, 3
HOPPER = MujocoEnv("hopper", "hopper")


def d4rl_arrays(n=50, dtype=np.float32, seed=0):
    """Three episodes: a fall (terminal) at row 9, a time limit (timeout) at row 29, and a cut one."""
    rng = np.random.default_rng(seed)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[9], timeouts[29] = True, True
    return {
        "observations": rng.normal(size=(n, OBS)).astype(dtype),
        "actions": rng.uniform(-1, 1, size=(n, ACT)).astype(dtype),
        "next_observations": rng.normal(size=(n, OBS)).astype(dtype),
        "rewards": rng.normal(size=n).astype(dtype),
        "terminals": terminals,
        "timeouts": timeouts,
        "infos/qpos": rng.normal(size=(n, 6)).astype(dtype),
        "infos/qvel": rng.normal(size=(n, 6)).astype(dtype),
        "infos/action_log_probs": rng.normal(size=n).astype(dtype),
    }


def write_d4rl_file(path, arrays, metadata=None):
    """Written with h5py directly, as D4RL's own files are (not with the project's writer)."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (metadata or {"algorithm": "SAC", "iteration": 7}).items():
            f.create_dataset(f"metadata/{key}", data=value)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # medium-replay files are float64
def test_d4rl_file_gives_its_transitions(tmp_path, dtype):
    arrays = d4rl_arrays(dtype=dtype)
    path = write_d4rl_file(tmp_path / "hopper-medium-v2.hdf5", arrays)
    dm = D4RLDataModule(HOPPER, str(path), val_fraction=0.2, batch_size=8)
    data = dm.load_transitions()
    assert data["x"].dtype == torch.float32
    np.testing.assert_allclose(data["x"].numpy(), arrays["observations"], rtol=1e-6)
    np.testing.assert_allclose(data["u"].numpy(), arrays["actions"], rtol=1e-6)
    # x' is next_observations, never the next row (row 10 starts a new episode after the fall at row 9).
    np.testing.assert_allclose(data["x_next"].numpy(), arrays["next_observations"], rtol=1e-6)
    np.testing.assert_allclose(data["r"].numpy(), arrays["rewards"], rtol=1e-6)
    # done marks the fall only; the timeout at row 29 ends the episode but not the dynamics.
    assert data["done"].dtype == torch.bool and data["done"].nonzero().flatten().tolist() == [9]
    assert dm.metadata == {"algorithm": "SAC", "iteration": 7}
    # Episodes end at the terminal and at the timeout: rows 0–9, 10–29, 30–49.
    r = arrays["rewards"].astype(np.float64)
    expected = [r[:10].sum(), r[10:30].sum(), r[30:].sum()]
    np.testing.assert_allclose(episode_returns(read_dataset(path)), expected, rtol=1e-5)
    dm.setup("fit")
    assert len(dm.train_data["x"]) == 40 and len(dm.val_data["x"]) == 10
    assert int(dm.all_data["done"].sum()) == 1  # split with its row, and joined again
    assert next(iter(dm.train_dataloader()))["done"].dtype == torch.bool


def test_dataset_found_by_name_in_d4rl_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_d4rl_file(tmp_path / "hopper-random-v5.hdf5", d4rl_arrays())
    assert read_dataset("hopper-random-v5")["observations"].shape == (50, OBS)
    with pytest.raises(SGPError, match="not found.*sgp_lightning.data.collect"):
        read_dataset("hopper-medium-v5")


@pytest.mark.parametrize("storage", ["arrow", "hdf5"])
def test_minari_dataset_is_read_with_its_metadata(tmp_path, monkeypatch, storage):
    """A Minari dataset written by minari itself (T+1 observations per episode), found by id in
    $MINARI_DATASETS_PATH or by directory, in D4RL's layout with its reference scores and env spec."""
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(0)
    episodes = [rng.normal(size=(length + 1, OBS)).astype(np.float32) for length in (5, 3)]
    buffers = [
        EpisodeBuffer(
            observations=obs, actions=rng.uniform(-1, 1, size=(len(obs) - 1, ACT)).astype(np.float32),
            rewards=rng.normal(size=len(obs) - 1), terminations=np.arange(len(obs) - 1) == len(obs) - 2 if i == 0
            else np.zeros(len(obs) - 1, bool), truncations=np.zeros(len(obs) - 1, bool) if i == 0
            else np.arange(len(obs) - 1) == len(obs) - 2,
        )
        for i, obs in enumerate(episodes)
    ]  # fmt: skip
    import gymnasium as gym

    minari.create_dataset_from_buffers(
        "hopper/test-v0", buffers, env="Hopper-v5", eval_env="Hopper-v5", algorithm_name="test", author="t",
        code_permalink="-", description="-", ref_min_score=-20.0, ref_max_score=3000.0, data_format=storage,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32),
    )  # fmt: skip
    for source in ("hopper/test-v0", str(tmp_path / "hopper" / "test-v0")):
        data = read_dataset(source)
        assert data["observations"].shape == (8, OBS)
        np.testing.assert_allclose(data["observations"][5:], episodes[1][:-1], rtol=1e-6)
        np.testing.assert_allclose(data["next_observations"][:5], episodes[0][1:], rtol=1e-6)
        assert data["terminals"].tolist() == [False] * 4 + [True] + [False] * 3
        assert data["timeouts"].tolist() == [False] * 7 + [True]
        metadata = data["metadata"]
        assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (-20.0, 3000.0)
        assert (
            json.loads(metadata["env_spec"])["id"] == "Hopper-v5"
            and metadata["dataset_id"] == "hopper/test-v0"
        )
        assert metadata["data_format"] == storage and metadata["action_high"] == [1.0] * ACT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("next_observations"), r"missing D4RL keys \['next_observations'\]"),
        (lambda a: a.update(rewards=a["rewards"][:-3]), r"'rewards' has 47 rows but 'observations' has 50"),
        (lambda a: a["actions"].__setitem__((12, 1), np.nan), r"1 of 50 rows have NaN.*'actions'.*row 12"),
        (
            lambda a: a.update(
                observations=a["observations"][:, :5], next_observations=a["next_observations"][:, :5]
            ),
            r"observations of size 5 and actions of size 3.*another env",
        ),
    ],
)
def test_malformed_file_fails_clearly(tmp_path, change, message):
    arrays = d4rl_arrays()
    change(arrays)
    path = write_d4rl_file(tmp_path / "bad.hdf5", arrays)
    with pytest.raises(SGPError, match=message):
        D4RLDataModule(HOPPER, str(path)).load_transitions()


@pytest.mark.parametrize(
    "flags", [np.array([0.0, 0.5] * 25), np.array([b"no", b"yes"] * 25), np.array([0, 2] * 25)]
)
def test_flags_that_are_not_booleans_fail(tmp_path, flags):
    arrays = d4rl_arrays()
    arrays["terminals"] = flags
    with pytest.raises(SGPError, match="'terminals' must hold booleans"):
        read_dataset(write_d4rl_file(tmp_path / "bad.hdf5", arrays))


def test_column_rewards_and_numeric_flags_are_read(tmp_path):
    """Some files store rewards as (N, 1) and flags as 0/1 numbers."""
    arrays = d4rl_arrays()
    arrays["rewards"] = arrays["rewards"][:, None]
    arrays["timeouts"] = arrays["timeouts"].astype(np.float32)
    data = read_dataset(write_d4rl_file(tmp_path / "ok.hdf5", arrays))
    assert data["rewards"].shape == (50,) and data["timeouts"].dtype == bool and data["timeouts"][29]


def test_normalized_score_uses_d4rl_reference_returns():
    for name, (random, expert) in {
        "hopper": (-20.272305, 3234.3),
        "halfcheetah": (-280.178953, 12135.0),
        "walker2d": (1.629008, 4592.3),
    }.items():
        np.testing.assert_allclose(
            mujoco_task(name).normalized_score([random, expert]), [0.0, 100.0], atol=1e-9
        )


def test_max_transitions_keeps_whole_episodes_from_every_part(tmp_path):
    """A medium-expert file shrunk by max_transitions keeps whole episodes from both halves."""
    arrays = d4rl_arrays(n=400)
    arrays["terminals"][:] = False
    arrays["timeouts"][:] = (np.arange(400) % 20) == 19  # 20 episodes of 20 rows
    path = write_d4rl_file(tmp_path / "me.hdf5", arrays)
    dm = D4RLDataModule(HOPPER, str(path), max_transitions=100, seed=3)
    x = dm.load_transitions()["x"].numpy()
    assert len(x) == 100
    rows = np.flatnonzero((arrays["observations"][:, None, :] == x[None]).all(-1).any(1))
    starts = rows[::20]
    assert (starts % 20 == 0).all() and np.array_equal(rows, (starts[:, None] + np.arange(20)).ravel())
    assert (rows < 200).any() and (rows >= 200).any()


def test_not_hdf5_fails_clearly(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("not a dataset")
    with pytest.raises(SGPError, match="not a readable HDF5 file"):
        read_dataset(path)


def test_truncated_hdf5_fails_clearly(tmp_path):
    """The first half of a real D4RL-layout file (a copy cut short) is one clear error, not garbage."""
    whole = write_d4rl_file(tmp_path / "whole.hdf5", d4rl_arrays())
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(SGPError, match="not a readable HDF5 file"):
        read_dataset(cut)


def test_collector_writes_d4rl_layout(tmp_path, capsys):
    out = tmp_path / "hopper-random-v5.hdf5"
    collect_main(["env=hopper", "dataset=random", "n=600", "num_envs=3", "seed=1", f"output={out}"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 600 and summary["policy"] == "random"
    with h5py.File(out) as f:
        for key in (
            "observations",
            "actions",
            "next_observations",
            "rewards",
            "terminals",
            "timeouts",
            "infos/qpos",
            "infos/qvel",
            "infos/action_log_probs",
            "metadata/return_mean",
        ):
            assert key in f, key
        assert f["observations"].dtype == np.float32 and f["terminals"].dtype == bool
        assert f["observations"].compression == "gzip"
    data = read_dataset(out)
    ends = data["terminals"] | data["timeouts"]
    # Within an episode the next row starts where this one ended; every copy's stream ends an episode.
    np.testing.assert_array_equal(
        data["next_observations"][:-1][~ends[:-1]], data["observations"][1:][~ends[:-1]]
    )
    assert ends[[199, 399, 599]].all()
    # A fall's x' is the fallen state from info["final_obs"], not the next row (the reset state): hopper
    # falls when z < 0.7 or |angle| > 0.2 (or a state entry exceeds 100).
    fallen = data["next_observations"][data["terminals"]]
    assert len(fallen) > 0
    assert ((fallen[:, 0] < 0.7) | (np.abs(fallen[:, 1]) > 0.2) | (np.abs(fallen[:, 1:]) > 100).any(1)).all()
    reset = data["observations"][1:][data["terminals"][:-1]]
    assert (np.abs(reset[:, 0] - 1.25) < 0.01).all()  # resets start at z = 1.25 (± 0.005 noise)
    # Hopper's observation is (qpos[1:], clip(qvel, ±10)).
    np.testing.assert_allclose(data["observations"][:, :5], data["infos/qpos"][:, 1:], atol=1e-6)
    assert np.all(np.abs(data["actions"]) <= 1) and data["infos/action_log_probs"][0] == pytest.approx(
        -3 * np.log(2)
    )
    # The metadata's return is over whole episodes: the step budget cuts each copy's last one.
    stream_ends = [199, 399, 599]
    cut = np.zeros(600, bool)
    for end in stream_ends:
        if not data["terminals"][end]:
            starts = np.flatnonzero(ends[:end])
            cut[(starts[-1] + 1 if len(starts) else 0) : end + 1] = True
    whole = episode_returns(data, exclude=cut)
    assert data["metadata"]["whole_episodes"] == len(whole) < data["metadata"]["episodes"]
    assert data["metadata"]["return_mean"] == pytest.approx(whole.mean())


def test_collector_medium_expert_is_medium_then_expert(tmp_path, capsys):
    """medium_expert concatenates n rows of the committed medium policy and n of the expert, and its
    metadata names both policies (return and training step)."""
    out = tmp_path / "hopper-medium-expert-v5.hdf5"
    collect_main(["env=hopper", "dataset=medium_expert", "n=300", "num_envs=3", f"output={out}"])
    capsys.readouterr()
    data = read_dataset(out)
    medium = load_policy(committed_policy_path("hopper", "medium"))[1]
    expert = load_policy(committed_policy_path("hopper", "expert"))[1]
    meta = data["metadata"]
    assert len(data["rewards"]) == 600 and meta["policy"] == "medium+expert"
    assert (meta["policy_train_step"], meta["expert_policy_train_step"]) == (
        medium["train_step"],
        expert["train_step"],
    )
    assert meta["expert_policy_return_mean"] == pytest.approx(expert["return_mean"])
    assert (data["terminals"] | data["timeouts"])[299]  # the medium half ends an episode at its last row


def test_collector_rejects_bad_options(tmp_path, capsys):
    for argv, message in [
        (["dataset=replay"], "unknown dataset 'replay'"),
        (["n=0"], "n must be positive"),
        (["env=ant"], "unknown MuJoCo task 'ant'"),
        (["episodes=3"], "unknown options ['episodes']"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            collect_main([*argv, f"output={tmp_path / 'x.hdf5'}"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_policy_matches_stable_baselines_actor(tmp_path):
    """The exported policy is SB3's SAC actor: same mean action and the same log-probability."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    torch.manual_seed(0)
    model = SAC("MlpPolicy", gym.make("Hopper-v5"), seed=0, device="cpu")
    policy = TanhGaussianPolicy.from_sb3_actor(model.actor)
    obs = torch.randn(7, OBS)
    with torch.no_grad():
        expected_mean = model.actor(obs, deterministic=True)
        actions, log_prob = policy.act(obs, torch.Generator().manual_seed(3))
        mean_actions, log_std, _ = model.actor.get_action_dist_params(obs)
        model.actor.action_dist.proba_distribution(mean_actions, log_std)
        expected_log_prob = model.actor.action_dist.log_prob(actions)
    torch.testing.assert_close(policy.act(obs, deterministic=True)[0], expected_mean)
    torch.testing.assert_close(log_prob, expected_log_prob, atol=2e-3, rtol=1e-4)  # SB3 adds 1e-6 inside log
    path = save_policy(policy, tmp_path / "p.pt", {"env": "hopper"})
    loaded, metadata = load_policy(path)
    torch.testing.assert_close(loaded.act(obs, deterministic=True)[0], expected_mean)
    assert metadata == {"env": "hopper"}
    with pytest.raises(SGPError, match="not a policy file"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_policy(tmp_path / "other.pt")


# ---------------------------------------------------------------- the D4RL domain through train() + plan()
TINY_HOPPER = [
    "experiment=d4rl/hopper_random",
    "d4rl_size=small",
    "model.dynamics.hidden_dims=[32,32]",
    "model.reward.hidden_dims=[32,32]",
    "model.score.hidden_dims=[32,32]",
    "model.ensemble.hidden_dims=[32,32]",
    "model.ensemble.num_members=3",
    "model.policy.hidden_dims=[32,32]",
    "model.td3bc.hidden_dims=[32,32]",
    "model.iql.hidden_dims=[32,32]",
    "domain.datamodule.batch_size=256",
    "planner.optimizer.iterations=3",
    "callbacks.planning.evaluator.num_episodes=2",
    "callbacks.planning.evaluator.episode_steps=4",
    *ONE_EPOCH,
]


@pytest.fixture(scope="module")
def hopper_random_file(tmp_path_factory):
    """A small hopper-random-v5 made by the collector (once per module), found by name in $D4RL_DATASET_DIR."""
    directory = tmp_path_factory.mktemp("d4rl")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("D4RL_DATASET_DIR", str(directory))
        collect_main(["env=hopper", "dataset=random", "n=1500", "num_envs=3"])
        yield directory / "hopper-random-v5.hdf5"


@pytest.fixture(scope="module")
def tiny_hopper_run(tmp_path_factory, hopper_random_file):
    """(run folder, metrics) of one TINY_HOPPER training run, shared by the tests that only read it."""
    from sgp_lightning.train import train
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("hopper") / "run"
    metrics, _ = train(compose_config("train", TINY_HOPPER, run))
    return run, metrics


def test_tiny_hopper_run_trains_and_runs_episodes(tmp_path, tiny_hopper_run):
    from sgp_lightning.plan import plan
    from tests.conftest import compose_config

    run, metrics = tiny_hopper_run
    # Validation runs short MPC episodes and reports the D4RL-normalised score.
    assert {"val/reward_loss", "val/policy_loss", "plan/return", "plan/normalized_score"} <= set(metrics)
    # The offline-RL baselines train in the same system but stay out of val/loss (the best checkpoint's
    # criterion), and their target networks followed every optimiser step.
    counted = ("dynamics", "ensemble", "reward", "score", "policy")
    assert metrics["val/loss"] == pytest.approx(
        sum(float(metrics[f"val/{p}_loss"]) for p in counted), rel=1e-5
    )
    assert {"val/td3bc_loss", "val/iql_loss"} <= set(metrics)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for part in ("td3bc", "iql"):
        assert int(checkpoint["state_dict"][f"{part}.updates"]) == checkpoint["global_step"] > 0
    assert metrics["plan/normalized_score"] == pytest.approx(
        float(mujoco_task("hopper").normalized_score(metrics["plan/return"])), rel=1e-5
    )
    methods = ["bc", "td3bc", "iql", "vanilla", "ensemble", "sgp"]
    planned = methods[3:]
    plan_cfg = compose_config(
        "plan",
        [
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "planner_set=d4rl",
            f"methods=[{','.join(methods)}]",
            "num_tasks=2",
            "episode_steps=5",
            "video=false",  # videos: test_plan_on_hopper_writes_trajectories_horizon_plot_and_videos
            *[f"planners.{m}.optimizer.iterations=2" for m in planned],
        ],
        tmp_path / "plan",
    )
    payload = plan(plan_cfg)
    assert list(payload["methods"]) == methods and payload["num_episodes"] == 2
    for name, result in payload["methods"].items():
        assert len(result["per_episode"]) == 2, name
        assert all(1 <= e["length"] <= 5 for e in result["per_episode"]), name
        assert result["normalized_score"] == pytest.approx(
            float(
                np.mean(mujoco_task("hopper").normalized_score([e["return"] for e in result["per_episode"]]))
            )
        )
    assert (tmp_path / "plan" / "table.md").read_text().startswith("| method | normalized score")


def test_plan_on_hopper_writes_trajectories_horizon_plot_and_videos(tmp_path, tiny_hopper_run):
    """trajectories.npz holds each episode's observations, actions and rewards (NaN after its end): a fresh
    Hopper-v5 reset with the saved seed and stepped with the saved actions meets the same observations and
    rewards. model_error_horizon is the dynamics model's k-step prediction of the executed actions from
    every observation met; videos/<method>.mp4 replays the first episode where MuJoCo can render."""
    import gymnasium as gym

    from sgp_lightning.models import SGPSystem
    from sgp_lightning.plan import plan
    from tests.conftest import compose_config

    run, _ = tiny_hopper_run
    steps, out = 12, tmp_path / "plan"
    plan_cfg = compose_config(
        "plan",
        [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "planner_set=d4rl", "methods=[bc,sgp]",
         "num_tasks=2", f"episode_steps={steps}", "planners.sgp.optimizer.iterations=2", "progress=false"],
        out,
    )  # fmt: skip
    payload = plan(plan_cfg)
    saved = np.load(out / "trajectories.npz", allow_pickle=False)
    env = gym.make("Hopper-v5")
    for method in ("bc", "sgp"):
        lengths, seeds = saved[f"{method}/lengths"], saved[f"{method}/seeds"]
        states, actions = saved[f"{method}/true_states"], saved[f"{method}/actions"]
        rewards = saved[f"{method}/rewards"]
        s = int(lengths.max())
        assert states.shape == (2, s + 1, OBS) and actions.shape == (2, s, ACT) and rewards.shape == (2, s)
        assert lengths.tolist() == [e["length"] for e in payload["methods"][method]["per_episode"]]
        for e in range(2):
            obs, _ = env.reset(seed=int(seeds[e]))
            np.testing.assert_array_equal(states[e, 0], obs.astype(np.float32))
            for t in range(lengths[e]):
                obs, reward, terminated, _, _ = env.step(actions[e, t].astype(np.float64))
                np.testing.assert_array_equal(states[e, t + 1], obs.astype(np.float32))
                assert rewards[e, t] == np.float32(reward)
            assert terminated == (lengths[e] < steps)  # an episode shorter than the limit fell
            assert np.isnan(states[e, lengths[e] + 1 :]).all() and np.isnan(actions[e, lengths[e] :]).all()
        np.testing.assert_allclose(
            np.nansum(rewards, 1), [e["return"] for e in payload["methods"][method]["per_episode"]], rtol=1e-5
        )
    # The planner's predicted states at each re-planning step (H = 5); the BC policy plans nothing.
    assert saved["sgp/planned_states"].shape == (2, int(saved["sgp/lengths"].max()), 6, OBS)
    assert "bc/planned_states" not in saved.files
    # Model error k steps ahead, recomputed one start at a time with the dynamics model.
    dynamics = SGPSystem.load_from_checkpoint(run / "checkpoints" / "last.ckpt").dynamics
    states, actions, lengths = (saved[f"sgp/{k}"] for k in ("true_states", "actions", "lengths"))
    expected = []
    for k in range(1, 6):
        errors = []
        for e in range(2):
            for t in range(lengths[e] - k + 1):
                x = torch.from_numpy(states[e, t : t + 1])
                with torch.no_grad():
                    for j in range(k):
                        x = dynamics(x, torch.from_numpy(actions[e, t + j : t + j + 1]))
                errors.append(float(np.linalg.norm(x[0].numpy() - states[e, t + k])))
        expected.append(np.mean(errors) if errors else np.nan)
    np.testing.assert_allclose(payload["methods"]["sgp"]["model_error_horizon"], expected, rtol=1e-4)
    assert (out / "model_error_horizon.png").stat().st_size > 0
    videos = sorted(p.name for p in (out / "videos").glob("*.mp4"))
    if not videos:
        pytest.skip("MuJoCo cannot render headless on this machine (plan.py logged why and skipped videos)")
    import imageio_ffmpeg

    assert videos == ["bc.mp4", "sgp.mp4"]
    for method in ("bc", "sgp"):
        reader = imageio_ffmpeg.read_frames(str(out / "videos" / f"{method}.mp4"))
        meta = next(reader)
        length = int(saved[f"{method}/lengths"][0])  # the first episode; Hopper renders every 5th step
        assert meta["size"] == (320, 240) and meta["fps"] == 25
        assert sum(1 for _ in reader) == len(set(range(0, length + 1, 5)) | {length})


def test_videos_are_skipped_with_one_message_where_mujoco_cannot_render(tmp_path, monkeypatch, caplog):
    """A rendering failure (no EGL, no OSMesa) writes no video and says why; it never fails the plan."""
    from types import SimpleNamespace

    from sgp_lightning import video

    def no_gl(*args):
        raise RuntimeError("an OpenGL platform library has not been loaded")

    monkeypatch.setattr(video, "render_episode", no_gl)
    episode = SimpleNamespace(
        method="sgp", lengths=np.array([3]), seeds=np.array([0]), actions=np.zeros((1, 3, 3))
    )
    with caplog.at_level("WARNING", logger="sgp_lightning"):
        assert video.write_episode_videos(HOPPER, [episode], tmp_path / "videos") == []
    assert not (tmp_path / "videos").exists()
    assert len(caplog.records) == 1 and "videos skipped: MuJoCo could not render" in caplog.text
    assert "video=false" in caplog.text


def test_episodes_are_seeded(tmp_path, hopper_random_file):
    """The same seed gives the same episodes; each policy baseline needs its part."""
    from sgp_lightning.planning import GradientPlanner, PolicyPlanner
    from sgp_lightning.planning.episodes import run_episodes
    from sgp_lightning.train import train
    from tests.conftest import compose_config

    _, trained = train(
        compose_config("train", [*TINY_HOPPER, "model.policy=null", "model.iql=null"], tmp_path / "run")
    )
    system, env = trained["system"], trained["env"]
    planner = GradientPlanner(
        beta=0.0, cost_source="learned", mpc={"horizon": 3}, optimizer={"iterations": 2, "lr": 0.1}
    )
    first = run_episodes(system, env, planner, num_episodes=2, max_steps=6, seed=5)
    again = run_episodes(system, env, planner, num_episodes=2, max_steps=6, seed=5)
    other = run_episodes(system, env, planner, num_episodes=2, max_steps=6, seed=6)
    np.testing.assert_array_equal(first.returns, again.returns)
    assert not np.array_equal(first.returns, other.returns)
    with pytest.raises(SGPError, match="the BC policy needs model.policy, but it is null"):
        run_episodes(system, env, PolicyPlanner(), num_episodes=1, max_steps=2)
    with pytest.raises(SGPError, match="the IQL policy needs model.iql, but it is null"):
        run_episodes(system, env, PolicyPlanner(name="iql", policy="iql"), num_episodes=1, max_steps=2)
    with pytest.raises(SGPError, match="model.dynamics is not a policy part"):
        run_episodes(system, env, PolicyPlanner(name="x", policy="dynamics"), num_episodes=1, max_steps=2)
    td3bc = run_episodes(
        system, env, PolicyPlanner(name="td3bc", policy="td3bc"), num_episodes=2, max_steps=6, seed=5
    )
    assert td3bc.returns.shape == (2,)


def _short_mpc_grid(tiny_hopper_run) -> tuple:
    """The tiny hopper's system and env, and SGP at β = 1 and 10⁵ (keys sgp@1, sgp@100000) with 3 + 2
    iterations on a horizon of 3; also vanilla and BC with those settings."""
    from sgp_lightning.models import SGPSystem
    from sgp_lightning.planning import make_planner
    from sgp_lightning.planning.config import planner_config

    run, _ = tiny_hopper_run
    system = SGPSystem.load_from_checkpoint(str(run / "checkpoints" / "last.ckpt"), map_location="cpu")
    iterations = {"optimizer": {"iterations": 3}, "mpc": {"horizon": 3, "iterations": 2, "warm_start": True}}
    planners = {
        f"sgp@{beta:g}": make_planner(planner_config("sgp", "d4rl", {"beta": beta, **iterations}))
        for beta in (1.0, 1e5)
    }
    others = {
        "vanilla": make_planner(planner_config("vanilla", "d4rl", iterations)),
        "bc": make_planner(planner_config("bc", "d4rl", {})),  # a policy: never stacked
    }
    return system, system.make_env(), planners, others


def test_stacked_episodes_are_each_methods_own_episodes(tiny_hopper_run):
    """A β sweep run as one batch of episodes (stack_episodes) gives each β the episodes it runs alone (to
    float rounding: 3 steps here, before closed-loop amplification matters), on the same seeds."""
    from sgp_lightning.planning import MPCEpisodes

    system, env, planners, others = _short_mpc_grid(tiny_hopper_run)
    planners.update(others)
    runs = {
        stack: MPCEpisodes(num_episodes=2, episode_steps=3, seed=7, stack=stack).evaluate_all(
            system, env, planners
        )
        for stack in (True, False)
    }
    for together, alone in zip(*runs.values(), strict=True):
        assert together.method == alone.method
        np.testing.assert_array_equal(together.seeds, [7, 8])
        np.testing.assert_array_equal(together.lengths, alone.lengths)
        for key in ("returns", "true_states", "actions", "rewards", "planned_states", "model_error_horizon"):
            if getattr(alone, key) is not None:
                np.testing.assert_allclose(
                    getattr(together, key), getattr(alone, key), atol=1e-4, err_msg=key
                )
        assert together.solved_with == (None if alone.method == "bc" else ("sgp@1", "sgp@100000", "vanilla"))
        assert alone.solved_with is None
    # the groups really planned with their own β (a mixed-up β would show)
    actions = [e.actions for e in runs[False][:3]]
    assert all(np.abs(a - b).max() > 1e-3 for i, a in enumerate(actions) for b in actions[i + 1 :])


def test_unstacked_episodes_of_a_grid_equal_each_betas_own_run(tiny_hopper_run):
    """Without stacking, the episodes of β values planned in one evaluation are, bit for bit, those each β
    runs in an evaluation of its own: so reproduce may plan a tuning grid's β apart, on several workers."""
    from sgp_lightning.planning import MPCEpisodes

    system, env, planners, _ = _short_mpc_grid(tiny_hopper_run)
    evaluator = MPCEpisodes(num_episodes=2, episode_steps=3, seed=7)
    together = evaluator.evaluate_all(system, env, planners)
    for grid_member in together:
        (alone,) = evaluator.evaluate_all(system, env, {grid_member.method: planners[grid_member.method]})
        for key in ("returns", "lengths", "true_states", "actions", "rewards", "planned_states"):
            np.testing.assert_array_equal(getattr(grid_member, key), getattr(alone, key), err_msg=key)
    assert np.abs(together[0].actions - together[1].actions).max() > 1e-3  # the two β plan differently


def test_dataset_of_another_env_fails_in_train(tmp_path, hopper_random_file):
    """A walker2d experiment pointed at the hopper file stops with one clear error."""
    from sgp_lightning.train import train
    from tests.conftest import compose_config, raises_user_error

    cfg = compose_config(
        "train",
        [
            "experiment=d4rl/walker2d_random",
            "d4rl_size=small",
            f"domain.datamodule.dataset={hopper_random_file}",
        ],
        tmp_path / "run",
    )
    with raises_user_error("observations of size 11 and actions of size 3, but this domain expects 17 and 6"):
        train(cfg)


def test_reproduce_d4rl_writes_the_table(tmp_path):
    """The D4RL reproduce entry generates its data, tunes SGP's β on a training seed and episodes of its own,
    trains the table's seed and reports last / best per method; progress=false reaches its plans (no
    episode progress bars), and its plans keep their trajectories and write no videos."""
    from tests.conftest import hydra_list

    tiny = [o for o in TINY_HOPPER if not o.startswith("experiment=")]
    proc = run_cli(
        "reproduce.py", "d4rl_hopper_small", f"output_dir={tmp_path}", "reproduce.datasets=[random]",
        "reproduce.seeds=[0]", "reproduce.collect.n=900", "reproduce.collect.num_envs=3", "progress=false",
        f"reproduce.train_overrides={hydra_list([*tiny, 'trainer.max_epochs=2'])}",
        f"reproduce.plan_overrides={hydra_list(['planner_set=d4rl', 'num_tasks=2', 'episode_steps=3', 'planners.sgp.optimizer.iterations=2', 'planners.vanilla.optimizer.iterations=2', 'planners.ensemble.optimizer.iterations=2'])}",
        # the entry's own tuning block (_d4rl_tune.yaml), shrunk: SGP only, two β, another training seed
        "reproduce.tune.train_seed=7", "reproduce.tune.methods=[sgp]", "reproduce.tune.betas={sgp: [1, 100]}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "episodes:" not in proc.stderr and "runs:" not in proc.stderr  # no progress bars
    plan_dir = tmp_path / "runs" / "random" / "seed_0" / "plan" / "methods"
    assert "sgp/true_states" in np.load(plan_dir / "trajectories.npz", allow_pickle=False).files
    assert not (plan_dir / "videos").exists()  # reproduce's plans: video=false
    payload = json.loads((tmp_path / "results.json").read_text())
    random = payload["datasets"]["random"]
    assert random["rows"] == 900 and (tmp_path / "data" / "hopper-random-v5.hdf5").is_file()
    assert set(random["methods"]) == {"bc", "td3bc", "iql", "vanilla", "ensemble", "sgp"}
    for method in random["methods"].values():
        assert len(method["per_seed_last"]) == 1
        assert method["last"][0] == pytest.approx(np.mean(method["per_seed_last"]))
        assert len(method["per_seed_episode_length"]) == 1
        assert all(1 <= length <= 3 for length in method["per_seed_episode_length"])  # episode_steps=3
    # β was tuned once, on training seed 7 and episodes from seed 200000, and the table planned with it.
    tuned = payload["tuning"]["per_dataset"]["random"]["sgp"]
    scores = tuned["achieved_by_beta"]
    assert set(scores) == {"1", "100"} and tuned["beta"] == (1.0 if scores["1"] >= scores["100"] else 100.0)
    tune_plan = json.loads(
        (
            tmp_path / "runs" / "random" / "tune_seed_7" / "tune" / "sgp" / "beta_1" / "results.json"
        ).read_text()
    )  # each β in a plan of its own: MPC episodes run each β alone
    assert tune_plan["methods"]["sgp@beta=1"]["normalized_score"] == scores["1"]
    table_plan = json.loads(
        (tmp_path / "runs" / "random" / "seed_0" / "plan" / "methods" / "results.json").read_text()
    )
    assert table_plan["methods"]["sgp"]["planner"]["beta"] == tuned["beta"]
    table = (tmp_path / "table.md").read_text()
    assert "| random |" in table and "1.6 / 11.7 / 12.3" in table  # the paper's column beside ours
    assert "β chosen per dataset on training seed 7" in table
    # The stated command regenerates this table: it carries the overrides, not only output_dir.
    assert payload["command"].startswith(f"python reproduce.py d4rl_hopper_small output_dir={tmp_path} ")
    assert "'reproduce.datasets=[random]'" in payload["command"] and payload["command"] in table


@pytest.mark.parametrize("env", ["hopper", "halfcheetah", "walker2d"])
@pytest.mark.parametrize("level", ["medium", "expert"])
def test_committed_policy_reaches_its_stated_return(env, level):
    """Re-evaluated on fresh seeds (not the ones it was chosen with), the committed policy's mean return is
    within 3 standard errors, or 10%, of the return stored with it."""
    policy, metadata = load_policy(committed_policy_path(env, level))
    assert metadata["env"] == env and metadata["level"] == level
    returns = evaluate_policy(mujoco_task(env), policy, episodes=10, seed=123)
    stated = metadata["return_mean"]
    tolerance = max(3 * returns.std(ddof=1) / np.sqrt(len(returns)), 0.1 * abs(stated))
    assert abs(returns.mean() - stated) <= tolerance, (returns.mean(), stated, tolerance)


def test_behaviour_training_rejects_unknown_options(capsys):
    from sgp_lightning.data.behaviour import main as behaviour_main

    with pytest.raises(SystemExit) as exit_info:
        behaviour_main(["env=hopper", "total_step=1000"])  # a typo of total_steps
    assert exit_info.value.code == 2 and "unknown options ['total_step']" in capsys.readouterr().err


def test_behaviour_training_snapshots_chooses_and_logs(tmp_path, capsys):
    """A tiny SAC run: snapshots every eval_every steps, medium and expert chosen among them, and a log of
    JSON lines only (stdout also carries MuJoCo's warnings)."""
    from sgp_lightning.data.behaviour import main as behaviour_main

    behaviour_main(["env=hopper", "total_steps=300", "learning_starts=100", "eval_every=100",
                    "eval_episodes=2", f"output_dir={tmp_path}"])  # fmt: skip
    capsys.readouterr()
    log = [json.loads(line) for line in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log[:-1]] == [100, 200, 300]
    assert log[-1]["env"] == "hopper" and set(log[-1]["chosen"]) == {"medium", "expert"}
    best = max(log[:-1], key=lambda row: row["return_mean"])
    assert log[-1]["chosen"]["expert"] == best["step"]
    policy, metadata = load_policy(tmp_path / "hopper_expert.pt")
    assert metadata["level"] == "expert" and metadata["selection_return_mean"] == best["return_mean"]
    # A second training run in the same folder would mix its snapshots into the choice: refused.
    with pytest.raises(SystemExit) as exit_info:
        behaviour_main(["env=hopper", "total_steps=300", "learning_starts=100", f"output_dir={tmp_path}"])
    assert exit_info.value.code == 2 and "already holds 3 snapshots" in capsys.readouterr().err
    behaviour_main(["env=hopper", "choose_only=true", "eval_episodes=2", f"output_dir={tmp_path}"])
    again = json.loads((tmp_path / "training_log.jsonl").read_text().splitlines()[-1])
    assert again == {"env": "hopper", "chosen": log[-1]["chosen"]}


def test_readme_controller_example_closes_the_loop_on_gymnasium(tiny_hopper_run):
    """The README's Controller example, on a tiny hopper checkpoint, with short solves and episodes."""
    import re

    from tests.conftest import ROOT

    run, _ = tiny_hopper_run
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use a trained planner in your own control loop", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    code = example.replace("logs/train/runs/RUN/checkpoints/last.ckpt", ckpt)
    code = code.replace(
        'planner="sgp")', 'planner="sgp", optimizer={"iterations": 2}, mpc={"iterations": 2})'
    )
    code = code.replace("max_episode_steps=1000", "max_episode_steps=5")
    assert code.count(ckpt) == 1 and "max_episode_steps=5" in code and '"iterations": 2' in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert np.isfinite(scope["episode_return"]) and scope["done"]
    assert scope["controller"].planner.beta == 10000.0  # the checkpoint's planner set (d4rl)


@pytest.mark.parametrize("method", ["bc", "td3bc", "iql"])
def test_policy_baselines_act_through_the_controller(tiny_hopper_run, method):
    """A policy baseline in a user's loop: Controller.act on hopper observations gives its policy's actions
    (no goal needed: the domain has none)."""
    import gymnasium as gym

    from sgp_lightning import Controller

    run, _ = tiny_hopper_run
    controller = Controller.from_checkpoint(str(run / "checkpoints" / "last.ckpt"), planner=method)
    obs, _ = gym.make("Hopper-v5").reset(seed=3)
    action = controller.act(obs.astype(np.float32))
    part = getattr(controller.system, controller.planner.policy)
    with torch.no_grad():
        expected = controller.env.normalize_action(
            controller.planner.act(controller.system, torch.as_tensor(obs[None], dtype=torch.float32))
        )
    assert action.shape == (3,) and part is not None
    np.testing.assert_allclose(action, expected[0].numpy(), rtol=1e-6)
