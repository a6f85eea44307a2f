"""Planar box pushing with marker (keypoint) states (paper C.4, Fig. 4), simulated quasi-statically in MuJoCo.

State x ∈ R¹² (centimetres): the 2-D positions of 5 markers rigidly attached to the box (x₁, y₁, …, x₅, y₅),
then the pusher's position. Action u ∈ R²: the pusher's commanded relative displacement. The pusher's own
dynamics x'_pusher = x_pusher + u are exact (and known to the planner, C.4); the markers are what is learned.

True step (quasi-static): the box pose is recovered from the markers (2-D least squares), the box starts at
rest, the pusher (a kinematic MuJoCo mocap sphere) moves along the straight line to x_pusher + u in
`push_steps` physics steps, then the box settles for `settle_steps`. The box slides on planar joints whose
damping stands in for the floor's friction (translation, and rotation about the centre with
`rotation_radius` as the lever arm), so it moves only while pushed. All copies of a batch run in one
`mujoco.rollout` call (one model, C-side loop over the batch), with no Python loop over samples.
With `marker_noise` > 0, each true step adds Gaussian noise to the markers it reports (motion capture).

Cost (eq. 47): terminal ‖markers_T − goal markers‖² (Q_T = `terminal_weight`·I), running
`running_weight`·‖u_t‖² (R = 0.1 I). Goal markers come from placing the box at a goal pose, as in the paper.
Tasks: `trials_per_goal` seeded starts for each goal (left, center, right), goal-major.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sgp_lightning.envs.base import Env, Tasks
from sgp_lightning.errors import require

METRES_PER_UNIT = 0.01  # states are in centimetres; MuJoCo works in metres
TASK_STREAM = 1_000_000  # task starts use seeds from here on; demonstrations use the data seed


def rotation(theta: torch.Tensor) -> torch.Tensor:
    """2-D rotation matrices (…, 2, 2)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


class BoxPushingEnv(Env):
    state_dim = 12
    action_dim = 2
    num_markers = 5

    def __init__(
        self,
        name: str = "box_pushing",
        box_size: Sequence[float] = (16.0, 12.0),
        markers: Sequence[Sequence[float]] = ((6.0, 4.0), (-6.0, 4.0), (-6.0, -4.0), (6.0, -4.0), (2.0, 1.0)),
        pusher_radius: float = 1.0,
        start_pose: Sequence[float] = (0.0, 0.0, 0.0),
        start_noise: Sequence[float] = (2.0, 2.0, 0.1),
        pusher_gap: float = 2.0,
        pusher_offset_range: float = 3.0,
        goals: Mapping[str, Sequence[float]] | None = None,
        trials_per_goal: int = 10,
        horizon: int = 10,
        task_seed: int = 0,
        terminal_weight: float = 1.0,
        running_weight: float = 0.1,
        success_error: float = 2.0,
        marker_noise: float = 0.0,
        noise_seed: int = 0,
        timestep: float = 0.005,
        push_steps: int = 40,
        settle_steps: int = 40,
        box_mass: float = 0.3,
        damping: float = 40.0,
        rotation_radius: float = 5.0,
        friction: float = 0.4,
    ):
        self.name = name
        self.box_size = torch.tensor(list(box_size), dtype=torch.float32)
        require(
            self.box_size.shape == (2,) and bool((self.box_size > 0).all()),
            f"box_size must be 2 positive lengths (cm), got {list(box_size)}",
        )
        self.markers_body = torch.tensor([list(m) for m in markers], dtype=torch.float32)
        require(
            self.markers_body.shape == (self.num_markers, 2),
            f"markers must be {self.num_markers} (x, y) positions in the box frame, got {list(markers)}",
        )
        half = self.box_size / 2
        require(
            bool((self.markers_body.abs() <= half).all()),
            f"markers must lie on the box (|x| ≤ {half[0]:g}, |y| ≤ {half[1]:g}), got {list(markers)}",
        )
        centred = self.markers_body - self.markers_body.mean(0)
        require(
            float(torch.linalg.matrix_rank(centred)) == 2,
            "markers must not be collinear (the box pose could not be read from them)",
        )
        self.pusher_radius = float(pusher_radius)
        self.start_pose = torch.tensor(list(start_pose), dtype=torch.float32)
        self.start_noise = torch.tensor(list(start_noise), dtype=torch.float32)
        require(self.start_pose.shape == (3,), f"start_pose must be (x, y, θ), got {list(start_pose)}")
        require(self.start_noise.shape == (3,), f"start_noise must be 3 values, got {list(start_noise)}")
        self.pusher_gap, self.pusher_offset_range = float(pusher_gap), float(pusher_offset_range)
        goals = dict(
            goals or {"left": (28.0, 10.0, 0.0), "center": (28.0, 0.0, 0.0), "right": (28.0, -10.0, 0.0)}
        )
        require(len(goals) > 0, "goals must name at least one goal pose")
        self.goal_names = list(goals)
        self.goal_poses = torch.tensor([list(p) for p in goals.values()], dtype=torch.float32)
        require(self.goal_poses.shape[1:] == (3,), f"each goal must be a pose (x, y, θ), got {goals}")
        require(trials_per_goal > 0 and horizon > 0, "trials_per_goal and horizon must be positive")
        self.trials_per_goal, self.horizon, self.task_seed = (
            int(trials_per_goal),
            int(horizon),
            int(task_seed),
        )
        require(terminal_weight >= 0 and running_weight >= 0, "cost weights must be ≥ 0")
        self.terminal_weight, self.running_weight = float(terminal_weight), float(running_weight)
        self.success_error = float(success_error)
        require(marker_noise >= 0, f"marker_noise must be ≥ 0, got {marker_noise}")
        self.marker_noise, self.noise_seed = float(marker_noise), int(noise_seed)
        self.reset_noise()
        require(min(timestep, box_mass, damping, rotation_radius) > 0, "physics constants must be positive")
        require(push_steps > 0 and settle_steps >= 0, "push_steps must be > 0 and settle_steps ≥ 0")
        self.physics = {
            "timestep": float(timestep), "box_mass": float(box_mass), "damping": float(damping),
            "rotation_radius": float(rotation_radius), "friction": float(friction),
        }  # fmt: skip
        self.push_steps, self.settle_steps = int(push_steps), int(settle_steps)
        self._sim = None  # (MjModel, MjData, template state), built on first use

    def reset_noise(self) -> None:
        """Restart the marker noise from `noise_seed`, so runs compared on one env see the same noise."""
        self._noise_generator = torch.Generator().manual_seed(self.noise_seed)

    # ------------------------------------------------------------------ geometry
    def markers_of(self, pose: torch.Tensor) -> torch.Tensor:
        """Marker positions (…, 5, 2) of box poses (…, 3) = (x, y, θ)."""
        body = self.markers_body.to(pose)
        return pose[..., None, :2] + body @ rotation(pose[..., 2]).transpose(-1, -2)

    def pose_of(self, markers: torch.Tensor) -> torch.Tensor:
        """The box pose (…, 3) that best fits markers (…, 5, 2): 2-D least squares (Kabsch)."""
        body = self.markers_body.to(markers)
        body_mean, world_mean = body.mean(0), markers.mean(-2)
        a, b = body - body_mean, markers - world_mean[..., None, :]
        cross = (a[:, 0] * b[..., 1] - a[:, 1] * b[..., 0]).sum(-1)
        dot = (a * b).sum((-1, -2))
        theta = torch.atan2(cross, dot)
        position = world_mean - (body_mean @ rotation(theta).transpose(-1, -2))
        return torch.cat([position, theta[..., None]], -1)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(markers (…, 5, 2), pusher (…, 2)) of states (…, 12)."""
        return x[..., :10].unflatten(-1, (self.num_markers, 2)), x[..., 10:]

    def state_of(self, pose: torch.Tensor, pusher: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.markers_of(pose).flatten(-2), pusher], -1)

    def rigid_distances(self) -> torch.Tensor:
        """The true distances between the 10 marker pairs."""
        i, j = torch.triu_indices(self.num_markers, self.num_markers, 1)
        return (self.markers_body[i] - self.markers_body[j]).norm(dim=-1)

    def rigidity_error(self, x: torch.Tensor) -> torch.Tensor:
        """How far states (…, 12) are from a rigid marker set: mean over the 10 pairs of
        |‖m_i − m_j‖ − true distance| (cm)."""
        markers, _ = self.split(x)
        i, j = torch.triu_indices(self.num_markers, self.num_markers, 1)
        distances = (markers[..., i, :] - markers[..., j, :]).norm(dim=-1)
        return (distances - self.rigid_distances().to(x)).abs().mean(-1)

    # ------------------------------------------------------------------ simulation
    def _simulator(self):
        if self._sim is None:
            import mujoco

            p, unit = self.physics, METRES_PER_UNIT
            hx, hy = (self.box_size / 2 * unit).tolist()
            rotational = p["damping"] * (p["rotation_radius"] * unit) ** 2
            xml = f"""
<mujoco model="box_pushing">
  <option timestep="{p["timestep"]}" gravity="0 0 0"/>
  <worldbody>
    <body name="box">
      <joint name="box_x" type="slide" axis="1 0 0" damping="{p["damping"]}"/>
      <joint name="box_y" type="slide" axis="0 1 0" damping="{p["damping"]}"/>
      <joint name="box_yaw" type="hinge" axis="0 0 1" damping="{rotational}"/>
      <geom type="box" size="{hx} {hy} 0.02" mass="{p["box_mass"]}" friction="{p["friction"]} 0.005 0.0001"/>
    </body>
    <body name="pusher" mocap="true" pos="-1 0 0">
      <geom type="sphere" size="{self.pusher_radius * unit}" friction="{p["friction"]} 0.005 0.0001"/>
    </body>
  </worldbody>
</mujoco>"""
            model = mujoco.MjModel.from_xml_string(xml)
            data = mujoco.MjData(model)
            spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
            template = np.zeros(mujoco.mj_stateSize(model, spec))
            mujoco.mj_getState(model, data, template, spec)  # [time, qpos (3), qvel (3)]
            self._sim = (model, data, template)
        return self._sim

    def __getstate__(self):  # MuJoCo objects are rebuilt after unpickling (e.g. for DDP spawn)
        return {**self.__dict__, "_sim": None}

    def simulate(self, pose: torch.Tensor, pusher: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Box poses (B, 3) after the pusher moves from `pusher` by `u` (cm), the box starting at rest."""
        import mujoco
        from mujoco import rollout

        model, data, template = self._simulator()
        unit, batch = METRES_PER_UNIT, pose.shape[0]
        initial = np.tile(template, (batch, 1))
        qpos = pose.detach().double().cpu().numpy()
        initial[:, 1:4] = np.concatenate([qpos[:, :2] * unit, qpos[:, 2:]], 1)
        fraction = np.concatenate(
            [np.arange(1, self.push_steps + 1) / self.push_steps, np.ones(self.settle_steps)]
        )
        start, move = (
            (pusher.detach().double().cpu().numpy() * unit),
            (u.detach().double().cpu().numpy() * unit),
        )
        path = start[:, None] + fraction[None, :, None] * move[:, None]  # (B, steps, 2)
        control = np.concatenate([path, np.zeros_like(path[..., :1])], -1)  # mocap (x, y, z)
        states, _ = rollout.rollout(
            model, data, initial, control, control_spec=mujoco.mjtState.mjSTATE_MOCAP_POS
        )
        final = states[:, -1, 1:4]
        final = np.concatenate([final[:, :2] / unit, final[:, 2:]], 1)
        return torch.as_tensor(final, dtype=pose.dtype, device=pose.device)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One quasi-static push from states (…, 12) by actions (…, 2)."""
        lead = x.shape[:-1]
        x, u = x.reshape(-1, 12), u.reshape(-1, 2)
        markers, pusher = self.split(x)
        pose = self.simulate(self.pose_of(markers), pusher, u)
        markers_next = self.markers_of(pose)
        if self.marker_noise > 0:
            noise = torch.randn(markers_next.shape, generator=self._noise_generator) * self.marker_noise
            markers_next = markers_next + noise.to(markers_next)
        return torch.cat([markers_next.flatten(-2), pusher + u], -1).reshape(*lead, 12)

    # ------------------------------------------------------------------ cost and tasks
    def stage_cost(self, x, u, goal):
        return self.running_weight * u.square().sum(-1)

    def terminal_cost(self, x, goal):
        return self.terminal_weight * (x[..., :10] - goal[..., :10]).square().sum(-1)

    def marker_error(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Root-mean-square marker distance to the goal markers (cm)."""
        return (x[..., :10] - goal[..., :10]).unflatten(-1, (5, 2)).square().sum(-1).mean(-1).sqrt()

    def success(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The box ends with its markers within `success_error` cm (RMS) of the goal markers."""
        return self.marker_error(states[:, -1], goal) <= self.success_error

    def sample_starts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Start states (n, 12): the box around `start_pose`, the pusher `pusher_gap` cm behind its back face
        with a lateral offset of up to ±`pusher_offset_range` cm."""
        unit = torch.rand(n, 4, generator=generator) * 2 - 1
        pose = self.start_pose + unit[:, :3] * self.start_noise
        behind = -(self.box_size[0] / 2 + self.pusher_radius + self.pusher_gap)
        offset = torch.stack([torch.full((n,), float(behind)), unit[:, 3] * self.pusher_offset_range], -1)
        pusher = pose[:, :2] + (offset[:, None] @ rotation(pose[:, 2]).transpose(-1, -2))[:, 0]
        return self.state_of(pose, pusher)

    def goal_states(self) -> torch.Tensor:
        """One state per goal (goals, 12): the goal markers; the pusher part is unused by the cost."""
        return self.state_of(self.goal_poses, self.goal_poses[:, :2])

    @property
    def num_tasks(self) -> int:
        """All trials of all goals (plan.py's `num_tasks` sets the trials per goal through this)."""
        return len(self.goal_names) * self.trials_per_goal

    @num_tasks.setter
    def num_tasks(self, value: int) -> None:
        goals = len(self.goal_names)
        require(
            value > 0 and value % goals == 0,
            f"num_tasks must be a positive multiple of the {goals} goals (trials per goal × goals), got {value}",
        )
        self.trials_per_goal = value // goals

    def task_goals(self) -> list[str]:
        """The goal name of each task, in the order of `tasks()`."""
        return [name for name in self.goal_names for _ in range(self.trials_per_goal)]

    def tasks(self) -> Tasks:
        # Offset, so task starts never repeat the demonstrations' starts (drawn from the data seed).
        generator = torch.Generator().manual_seed(TASK_STREAM + self.task_seed)
        x0 = self.sample_starts(self.num_tasks, generator)
        goal = self.goal_states().repeat_interleave(self.trials_per_goal, 0)
        return Tasks(x0, goal)

    def nominal_goal(self) -> torch.Tensor:
        return self.goal_states()[len(self.goal_names) // 2]

    # ------------------------------------------------------------------ plots
    def positions(self, states: torch.Tensor) -> torch.Tensor:
        """The markers' centroid (cm)."""
        return self.split(states)[0].mean(-2)

    def outline(self, pose: torch.Tensor) -> torch.Tensor:
        """Corners (…, 5, 2) of the box at poses (…, 3), closed for plotting."""
        hx, hy = (self.box_size / 2).tolist()
        corners = torch.tensor([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy], [hx, hy]], dtype=pose.dtype)
        return pose[..., None, :2] + corners @ rotation(pose[..., 2]).transpose(-1, -2)

    def draw(self, ax) -> None:
        for name, pose in zip(self.goal_names, self.goal_poses, strict=True):
            corners = self.outline(pose).numpy()
            ax.plot(corners[:, 0], corners[:, 1], ls="--", color="gold", lw=1.2)
            ax.annotate(name, self.markers_of(pose).mean(0).tolist(), ha="center", fontsize=7)
        ax.set_aspect("equal")
        ax.set_xlabel("x (cm)")
        ax.set_ylabel("y (cm)")
        ax.set_xlim(-20, 45)
        ax.set_ylim(-25, 25)

    def __repr__(self) -> str:
        goals = ", ".join(self.goal_names)
        return f"BoxPushingEnv({self.name!r}, goals [{goals}] × {self.trials_per_goal}, T={self.horizon})"
