"""mp4 videos of MuJoCo episodes (plan.py's `videos/<method>.mp4`), rendered headless.

An episode is rendered by replaying its saved actions from its seed in a fresh gymnasium env (MuJoCo is
deterministic, so the replay is the episode that was evaluated), after the evaluation, so rendering never
slows the timed episodes. Without a display MuJoCo renders through EGL (`MUJOCO_GL=egl`, the default here
when MUJOCO_GL is unset) or OSMesa (`MUJOCO_GL=osmesa`). Where neither works, or imageio-ffmpeg is missing,
the videos are skipped with one message; a plan never fails for a video.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sgp_lightning.utils import log

VIDEO_FPS = 25  # at most this many frames per second of simulated time (played back in real time)
FRAME_SIZE = (320, 240)  # width, height in pixels (multiples of 16, as H.264 encoders want)


def headless_gl() -> str:
    """The MuJoCo OpenGL backend rendering will use: MUJOCO_GL if set; otherwise `egl` when there is no
    display (set in os.environ, where gymnasium's renderer reads it), else gymnasium's own choice."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "glfw, egl or osmesa (gymnasium's choice)")


def render_episode(gym_id: str, seed: int, actions: np.ndarray) -> tuple[np.ndarray, float]:
    r"""
    Replay one episode in a fresh rendering env and return its frames.

    Args:
        gym_id (`str`):
            The gymnasium id of the episode's env, e.g. `Hopper-v5`.
        seed (`int`):
            The seed the episode was reset with.
        actions (`np.ndarray` of shape `(L, action_dim)`):
            The actions the episode executed.

    Returns:
        `(frames, fps)`: `np.ndarray` of shape `(N, height, width, 3)`, uint8 (the reset state, every k-th
        step with k chosen so that fps ≤ VIDEO_FPS, and the last step), and the frame rate that plays them
        back in real time.
    """
    import gymnasium as gym

    width, height = FRAME_SIZE
    env = gym.make(gym_id, render_mode="rgb_array", width=width, height=height)
    try:
        every = max(1, round(env.metadata["render_fps"] / VIDEO_FPS))
        env.reset(seed=int(seed))
        frames = [env.render()]
        for t, action in enumerate(actions, start=1):
            env.step(np.asarray(action, dtype=np.float64))
            if t % every == 0 or t == len(actions):
                frames.append(env.render())
    finally:
        env.close()
    return np.stack(frames), env.metadata["render_fps"] / every


def write_episode_videos(env, evaluations: list, folder: Path) -> list[Path]:
    """`folder/<method>.mp4` of the first episode of each evaluation (`EpisodeEvaluation`s of the MuJoCo
    env `env`); returns the files written (none, with one logged message, where rendering or encoding is
    unavailable)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        log.warning("videos skipped: imageio-ffmpeg is not installed (pip install imageio-ffmpeg)")
        return []
    backend, written = headless_gl(), []
    for evaluation in evaluations:
        length = int(evaluation.lengths[0])
        try:
            frames, fps = render_episode(env.task.gym_id, evaluation.seeds[0], evaluation.actions[0, :length])
        except Exception as err:  # any GL failure: no video, never a failed plan
            log.warning(
                f"videos skipped: MuJoCo could not render headless with MUJOCO_GL={backend} "
                f"({type(err).__name__}: {err}). Install EGL (Debian/Ubuntu: apt-get install libegl1 "
                "libgl1-mesa-dri) or OSMesa (apt-get install libosmesa6, then MUJOCO_GL=osmesa), or pass video=false"
            )
            return written
        path = Path(folder) / f"{evaluation.method}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=fps)
        writer.send(None)  # start the encoder
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        written.append(path)
    if written:
        log.info(f"wrote {len(written)} episode video(s) to {folder}")
    return written
