"""Pixel single integrator: renderer/extractor, U-Nets, the vmap ensemble, CEM, and a tiny run end to end."""

import functools
import json

import pytest
import torch
from omegaconf import open_dict

from datamodules import PixelDataModule
from sgp_lightning import SGPError
from sgp_lightning.envs import PixelIntegratorEnv
from sgp_lightning.models import EnsembleDynamicsModel, ScoreModel, SGPSystem
from sgp_lightning.nets import MLP, Ensemble, NoiseConditionedUNet, UNet
from sgp_lightning.plan import plan
from sgp_lightning.planning import (
    CEMPlanner,
    EnsemblePenalty,
    GradientPlanner,
    NoPenalty,
    ScorePenalty,
    ShootingProblem,
    plan_and_evaluate,
)
from sgp_lightning.train import train
from tests.conftest import ONE_EPOCH, compose_config

SMALL_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention": False}


def test_render_then_extract_recovers_the_point():
    env = PixelIntegratorEnv()
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(500, 2, generator=generator) * 2 - 1) * env.wall
    images = env.render_state(x)
    assert images.shape == (500, 1, 32, 32)
    assert torch.allclose(env.extract_state(images), x, atol=1e-4)
    # Batched over any leading shape, like a plan (B, T, 1, H, W).
    assert torch.allclose(
        env.extract_state(env.render_state(x.view(50, 10, 2))), x.view(50, 10, 2), atol=1e-4
    )


def test_action_images_sum_to_one_and_encode_their_control():
    env = PixelIntegratorEnv()
    u = (torch.rand(300, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1) * env.action_limit
    images = env.render_action(u)
    assert torch.allclose(images.sum((-1, -2, -3)), torch.ones(300), atol=1e-5)
    assert images.min() >= 0
    assert torch.allclose(env.extract_action(images), u, atol=1e-5)
    assert torch.allclose(env.extract_action(env.neutral_action()), torch.zeros(2), atol=1e-6)


def test_true_step_cost_and_tasks():
    env = PixelIntegratorEnv()
    x, u = torch.tensor([[0.3, -0.5]]), torch.tensor([[0.1, 0.2]])
    y_next = env.step(env.render_state(x), env.render_action(u))
    assert torch.allclose(env.extract_state(y_next), x + u, atol=1e-5)
    # The wall keeps the dot inside the rendered field.
    far = env.step(
        env.render_state(torch.tensor([[1.1, 0.0]])), 3 * env.render_action(torch.tensor([[0.2, 0]]))
    )
    assert torch.allclose(env.extract_state(far), torch.tensor([[env.wall, 0.0]]), atol=1e-3)
    # Eq. 45 with Q = 500, R = 6.5: one stage at distance (0.3, 0.4) with u = (0.1, 0.2).
    goal = env.render_state(torch.tensor([[0.0, -0.1]]))
    cost = env.stage_cost(env.render_state(torch.tensor([[0.3, 0.3]])), env.render_action(u), goal)
    assert torch.allclose(cost, torch.tensor([500 * 0.25 + 6.5 * 0.05]), rtol=1e-4)
    tasks = env.tasks()
    starts, goals = env.extract_state(tasks.x0), env.extract_state(tasks.goal)
    assert torch.allclose((starts - goals).norm(dim=-1), torch.full((8,), 0.5), atol=1e-4)
    assert starts.abs().max() <= env.state_box


def test_pixel_data_is_stored_as_vectors_and_rendered_per_batch():
    dm = PixelDataModule(PixelIntegratorEnv(), num_samples=600, stats_samples=200, batch_size=50, seed=3)
    dm.setup()
    assert dm.train_data["x"].shape[1:] == (2,)  # hidden vectors, not pixels
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["x"].shape == batch["u"].shape == batch["x_next"].shape == (50, 1, 32, 32)
    assert dm.stats["x"][0].shape == (1, 1, 1) and dm.stats["xu"][0].shape == (2, 1, 1)
    env = dm.env
    assert torch.allclose(env.extract_state(batch["x"]) + env.extract_action(batch["u"]),
                          env.extract_state(batch["x_next"]), atol=1e-4)  # fmt: skip


def test_noise_conditioned_unet_shape_and_one_over_sigma():
    sigmas = torch.tensor([50.0, 1.0, 0.01])
    net = NoiseConditionedUNet(2, sigmas, sample_size=16, **SMALL_UNET)
    z = torch.randn(3, 4, 2, 16, 16)
    for level in range(3):
        out = net(z, level)
        assert out.shape == z.shape
        raw = net.unet(z.flatten(0, 1), torch.full((12,), level)).sample.view_as(z)
        assert torch.allclose(out * sigmas[level], raw, rtol=1e-4, atol=1e-5)
    per_sample = torch.tensor([0, 1, 2]).view(3, 1).expand(3, 4)
    assert torch.allclose(net(z, per_sample)[2], net(z[2], 2), rtol=1e-4, atol=1e-4)


def test_unet_rejects_widths_and_sizes_it_cannot_handle():
    with pytest.raises(SGPError, match="not divisible by norm_num_groups"):
        UNet(2, 1, 32, block_out_channels=[12, 32], norm_num_groups=8)
    with pytest.raises(SGPError, match="cannot be halved"):
        UNet(2, 1, 30, block_out_channels=[8, 16, 16], norm_num_groups=4)
    with pytest.raises(SGPError, match="use mlp for vectors and unet for images"):
        ScoreModel([1, 32, 32], [1, 32, 32], architecture="mlp")


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_vectorised_ensemble_equals_a_loop_over_members(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        ensemble, x = Ensemble(4, lambda: MLP(6, 3, [16])), torch.randn(5, 7, 6)
    else:
        ensemble = Ensemble(3, lambda: UNet(2, 1, 16, **SMALL_UNET))
        x = torch.randn(5, 2, 16, 16)
    loop = torch.stack([ensemble.member(k)(x) for k in range(ensemble.num_members)])
    assert torch.allclose(ensemble(x), loop, atol=1e-5)
    assert torch.allclose(ensemble(x, num_members=2), loop[:2], atol=1e-5)
    assert not torch.allclose(loop[0], loop[1])  # members start from different weights
    per_member = torch.randn(ensemble.num_members, *x.shape)
    stacked = torch.stack([ensemble.member(k)(per_member[k]) for k in range(ensemble.num_members)])
    assert torch.allclose(ensemble(per_member, stacked=True), stacked, atol=1e-5)


def test_unet_ensemble_pickles_for_ddp_spawn_and_keeps_the_train_mode():
    import pickle

    ensemble = Ensemble(2, lambda: UNet(2, 1, 16, **SMALL_UNET))
    x = torch.randn(3, 2, 16, 16)
    copy = pickle.loads(pickle.dumps(ensemble))
    assert torch.allclose(copy(x), ensemble(x))
    ensemble.eval()
    assert not ensemble._template[0].training and not ensemble.member(0).training


def test_ensemble_penalty_rollout_matches_separate_evaluation():
    torch.manual_seed(0)
    model = EnsembleDynamicsModel(2, 2, num_members=3, hidden_dims=[16])
    penalty = EnsemblePenalty(model, beta=0.7)
    x0, actions = torch.randn(4, 2), torch.randn(4, 5, 2)
    with torch.no_grad():
        states, value = penalty.rollout(x0, actions)
        manual = [x0]
        for t in range(5):
            manual.append(model(manual[-1], actions[:, t]).mean(0))
        manual = torch.stack(manual, 1)
        assert torch.allclose(states, manual, atol=1e-5)
        assert torch.allclose(value, penalty(states[:, :-1], actions, None), atol=1e-5)
        # The disagreement is the members' variance: zero when every member is the same network.
        same = EnsembleDynamicsModel(2, 2, num_members=2, hidden_dims=[16])
        for p in same.net.stacked_params:
            p.copy_(p[:1].expand_as(p))
        assert EnsemblePenalty(same, 1.0)(states[:, :-1], actions, None).abs().max() < 1e-10


def test_cem_improves_a_known_quadratic_and_refuses_the_score_penalty():
    goal = torch.tensor([[1.0, -2.0], [0.5, 0.5]])

    def cost(states, actions, goal):
        return (states[:, -1] - goal).square().sum(-1) + 0.01 * actions.square().sum((-1, -2))

    problem = ShootingProblem(lambda x, u: x + u, cost, NoPenalty(), 4, torch.zeros(2))
    x0 = torch.zeros(2, 2)
    start = cost(problem.rollout(x0, problem.neutral_plan(x0)), problem.neutral_plan(x0), goal)
    result = CEMPlanner(
        optimizer={"iterations": 40, "population": 64, "elites": 8, "std": 0.5, "seed": 0}
    ).solve(problem, x0, goal)
    # The optimum puts the total displacement at the goal: cost 0.01·‖g‖²/4, far below the start's ‖g‖².
    optimum = 0.01 * goal.square().sum(-1) / 4
    assert (result.cost_planned < 0.05 * start).all()
    assert (result.cost_planned - optimum).abs().max() < 0.05
    assert result.history["cost"].shape == (40, 2)
    # Image-shaped plans (B, T, 1, H, W): the elite gather keeps each candidate's whole plan together.
    target = torch.zeros(1, 1, 4, 4)
    target[..., 1, 2] = 1.0

    def image_cost(states, actions, goal):
        return (states[:, -1] - goal).square().flatten(1).sum(1)

    images = ShootingProblem(lambda x, u: x + u, image_cost, NoPenalty(), 2, torch.zeros(1, 4, 4))
    plan = CEMPlanner(
        optimizer={"iterations": 50, "population": 64, "elites": 8, "std": 0.3, "seed": 1}
    ).solve(images, torch.zeros(2, 1, 4, 4), target.expand(2, 1, 4, 4))
    assert plan.actions.shape == (2, 2, 1, 4, 4)
    assert (plan.cost_planned < 0.05).all()
    score = ScoreModel(2, 2, hidden_dims=[8], num_levels=2)
    scored = ShootingProblem(lambda x, u: x + u, cost, ScorePenalty(score, 1.0), 4, torch.zeros(2))
    with pytest.raises(SGPError, match="CEM needs a penalty with a value"):
        CEMPlanner(optimizer={"iterations": 1}).solve(scored, x0, goal)


TINY_PIXEL = [
    "experiment=pixel_integrator_small",
    "domain.datamodule.num_samples=300",
    "domain.datamodule.stats_samples=100",
    "domain.datamodule.batch_size=64",
    "domain.datamodule.val_fraction=0.2",
    "domain.env.num_tasks=2",
    "domain.env.horizon=3",
    "domain.num_levels=20",
    "planner.optimizer.start_level=15",  # the experiment's 220 is for its 232 levels
    "model.dynamics.unet.block_out_channels=[8,16]",
    "model.score.unet.block_out_channels=[8,16]",
    "model.ensemble.num_members=2",
    "planner.optimizer.iterations=3",
    *ONE_EPOCH,
]


def test_tiny_pixel_run_trains_and_plans_every_method(tmp_path):
    cfg = compose_config("train", TINY_PIXEL, tmp_path / "run")
    metrics, objects = train(cfg)
    assert {"plan/cost_planned", "plan/cost_achieved", "val/ensemble_loss", "val/score_loss"} <= set(metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The checkpoint rebuilds the same networks, ensemble included.
    reloaded = SGPSystem.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    trained = objects["system"].cpu().eval()
    size = cfg.domain.env.image_size
    y, u = torch.rand(2, 1, size, size), torch.rand(2, 1, size, size)
    with torch.no_grad():
        assert torch.allclose(reloaded.ensemble(y, u), trained.ensemble(y, u), atol=1e-6)
        assert torch.allclose(reloaded.score(torch.cat([y, u], 1), 3), trained.score(torch.cat([y, u], 1), 3))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert "plan/image_rollouts" in events.Tags()["images"]

    plan_cfg = compose_config(
        "plan",
        [
            f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            "planner_set=pixel_integrator_small",
            "methods=[sgp,vanilla,ensemble,cem]",
            "planners.sgp.optimizer.iterations=3",
            "planners.sgp.optimizer.start_level=15",
            "planners.vanilla.optimizer.iterations=3",
            "planners.ensemble.optimizer.iterations=3",
            "planners.cem.optimizer.iterations=2",
            "planners.cem.optimizer.population=4",
            "planners.cem.optimizer.elites=2",
        ],
        tmp_path / "plan",
    )
    payload = plan(plan_cfg)
    assert list(payload["methods"]) == ["sgp", "vanilla", "ensemble", "cem"]
    saved = json.loads((tmp_path / "plan" / "results.json").read_text())
    assert saved["methods"]["cem"]["cost_achieved"] == payload["methods"]["cem"]["cost_achieved"]
    assert (tmp_path / "plan" / "image_rollouts.png").is_file()

    # The ensemble planner asked for more members than were trained: one clear error.
    with open_dict(plan_cfg):
        plan_cfg.planners.cem.ensemble_members = 5
    with pytest.raises(SGPError, match="ensemble_members must be in"):
        plan(plan_cfg)


def test_unet_config_errors_reach_the_user_before_training(tmp_path):
    from tests.conftest import raises_user_error

    cfg = compose_config("train", [*TINY_PIXEL, "model.score.unet.norm_num_groups=3"], tmp_path / "run")
    with raises_user_error(r"U-Net block widths \[8, 16\] are not divisible by norm_num_groups=3"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training


def test_ensemble_and_cem_planners_work_on_a_vector_domain():
    """The baselines are general planners: here on the pit domain with an (untrained) MLP ensemble."""
    from sgp_lightning.envs import IntegratorEnv
    from sgp_lightning.models import SGPSystem

    torch.manual_seed(0)
    env_cfg = {"_target_": "sgp_lightning.envs.IntegratorEnv", "num_tasks": 3, "horizon": 5}
    system = SGPSystem(
        "pit",
        [2],
        [2],
        env_cfg,
        dynamics={"hidden_dims": [16]},
        ensemble={"num_members": 3, "hidden_dims": [16]},
    )
    env = system.make_env()
    assert isinstance(env, IntegratorEnv)
    cem = {"iterations": 3, "population": 8, "elites": 2}
    planners = {
        "ensemble": GradientPlanner(beta=0.5, penalty=EnsemblePenalty, dynamics="ensemble_mean",
                                    optimizer={"iterations": 5, "lr": 0.05}),
        "cem": CEMPlanner(beta=0.5, penalty=functools.partial(EnsemblePenalty, num_members=2),
                          dynamics="ensemble_mean", ensemble_members=2, optimizer=cem),
        "cem_score_free": CEMPlanner(beta=0, penalty=EnsemblePenalty, dynamics="ensemble_mean", optimizer=cem),
    }  # fmt: skip
    for name, planner in planners.items():
        evaluation = plan_and_evaluate(system, env, env.tasks(), planner, method=name)
        assert evaluation.plan.actions.shape == (3, 5, 2), name
        assert torch.isfinite(evaluation.cost_achieved).all(), name
    with pytest.raises(SGPError, match="ensemble_members must be in \\[2, 3\\]"):
        plan_and_evaluate(
            system, env, env.tasks(), CEMPlanner(beta=0, dynamics="ensemble_mean", ensemble_members=4)
        )


def test_action_images_are_normalized_before_they_act():
    env = PixelIntegratorEnv()
    y, u = env.render_state(torch.tensor([[0.1, 0.2]])), env.render_action(torch.tensor([[0.15, -0.1]]))
    # Scaling an action image does not scale the control: the env normalizes its total intensity to 1.
    assert torch.allclose(env.step(y, 3.0 * u), env.step(y, u), atol=1e-6)
    assert torch.allclose(env.normalize_action(2.5 * u).sum(), torch.tensor(1.0))
    # Intensities are non-negative: a negative lobe cannot push the control beyond the grid.
    lobed = u - env.render_action(torch.tensor([[-0.29, 0.29]]))
    assert torch.allclose(env.step(y, lobed), env.step(y, u), atol=1e-6)


@pytest.mark.parametrize("normalize_actions", [True, False])
def test_planner_setting_decides_whether_the_models_see_normalized_action_images(normalize_actions):
    """normalize_actions=true: the models see (and plans return) unit-intensity images; false: the models
    see the raw decision variables, as in the paper's pixel planner, and only the true env normalizes."""
    env = PixelIntegratorEnv(image_size=8)
    seen = []

    class Recorder:  # stands in for a trained system whose dynamics model records its inputs
        dynamics = staticmethod(lambda y, u_image: seen.append(u_image) or y)
        ensemble = score = reward = policy = distance = None

    planner = GradientPlanner(beta=0, normalize_actions=normalize_actions)
    problem = planner.problem(Recorder(), env, horizon=2)
    u = env.render_action(torch.tensor([[0.15, -0.1]]))
    decision = torch.stack([2.0 * u, 0.5 * u], 1)
    tasks = env.tasks()
    _, cost, _ = problem.objective(tasks.x0[:1], tasks.goal[:1], decision, None)
    intensities = torch.stack([a.sum() for a in seen])
    expected = torch.ones(2) if normalize_actions else torch.tensor([2.0, 0.5])
    assert torch.allclose(intensities, expected, atol=1e-5)
    # Either way the cost charges the control the true env applies (the normalized image's).
    normalized = problem.objective(tasks.x0[:1], tasks.goal[:1], env.normalize_action(decision), None)[1]
    assert torch.allclose(cost, normalized)


def test_action_units_scale_the_optimiser_steps():
    """Adam in units of s with lr equals Adam in raw units with lr·s (Adam ignores the gradient's scale)."""

    def cost(states, actions, goal):
        return (states[:, -1] - goal).square().sum(-1)

    x0, goal = torch.zeros(3, 2), torch.tensor([[1.0, -1.0], [0.3, 0.2], [-2.0, 0.5]])
    scaled = ShootingProblem(
        lambda x, u: x + u, cost, NoPenalty(), 3, torch.zeros(2), action_scale=torch.tensor(4.0)
    )
    raw = ShootingProblem(lambda x, u: x + u, cost, NoPenalty(), 3, torch.zeros(2))
    a = GradientPlanner(optimizer={"iterations": 20, "lr": 0.01}).solve(scaled, x0, goal)
    b = GradientPlanner(optimizer={"iterations": 20, "lr": 0.04}).solve(raw, x0, goal)
    assert torch.allclose(a.actions, b.actions, atol=1e-4)
    assert not torch.allclose(
        a.actions, GradientPlanner(optimizer={"iterations": 20, "lr": 0.01}).solve(raw, x0, goal).actions
    )
