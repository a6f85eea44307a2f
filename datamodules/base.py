"""Transition datasets (x, u, x', r[, done]): validation, seeded split, normalization stats, batched loading."""

from __future__ import annotations

import math
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from sgp_lightning.errors import SGPError, require
from sgp_lightning.spaces import NORMALIZATIONS, join, sample_stats

KEYS = ("x", "u", "x_next", "r")
# Optional `done` (bool, N): the episode ended at this row by a fall (D4RL's terminals), not by the time
# limit. Kept with the transitions and in every batch; no model trains on it (no termination model).

# ShuffledBatches is loaded in the main process (num_workers=0), so its __len__ is exact.
warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")


def validate_transitions(data: dict[str, torch.Tensor], source: str = "dataset") -> dict[str, torch.Tensor]:
    r"""
    Check a transition dataset's keys, shapes and finiteness. Raises `SGPError` naming the problem (and,
    for non-finite values, how many rows and the first).

    Args:
        data (`dict[str, torch.Tensor]`):
            `x` and `x_next` `(N, *state_shape)`, `u` `(N, *action_shape)`, `r` `(N,)`, and optionally
            `done` `(N,)` bool; any array-likes torch accepts, in the domain's units.
        source (`str`, *optional*, defaults to `"dataset"`):
            What the data is, for the error messages.

    Returns:
        `dict[str, torch.Tensor]`: the four tensors as float32 (and `done` as given), N ≥ 1 rows each.
    """
    missing = [k for k in KEYS if k not in data]
    require(not missing, f"{source} is missing keys {missing}; a transition dataset needs {list(KEYS)}")
    done = data.get("done")
    data = {k: torch.as_tensor(data[k]).float() for k in KEYS}
    n = data["x"].shape[0]
    require(n > 0, f"{source} is empty: it has no transitions")
    if done is not None:
        done = torch.as_tensor(done)
        require(
            done.shape == (n,) and done.dtype == torch.bool,
            f"{source}: done must be a bool tensor of shape ({n},), got {done.dtype} {tuple(done.shape)}",
        )
        data["done"] = done
    require(data["x"].dim() >= 2 and data["u"].dim() >= 2, f"{source}: x and u need shape (N, dim)")
    for k in KEYS:
        require(data[k].shape[0] == n, f"{source}: {k} has {data[k].shape[0]} rows but x has {n}")
    require(data["x_next"].shape == data["x"].shape, f"{source}: x_next shape differs from x shape")
    require(data["r"].dim() == 1, f"{source}: r must have shape (N,), got {tuple(data['r'].shape)}")
    for k in KEYS:
        bad = ~torch.isfinite(data[k]).reshape(n, -1).all(1)
        if bad.any():
            raise SGPError(
                f"{source}: {int(bad.sum())} of {n} rows have NaN or infinite values in {k!r} "
                f"(first at row {int(bad.nonzero()[0])})"
            )
    return data


class ShuffledBatches(IterableDataset):
    r"""
    Yields whole batches by slicing tensors with one permutation per epoch: no per-sample Python calls.

    Sharded by rank (each rank gets an equal, disjoint part) so DDP needs no DistributedSampler. The
    permutation of epoch e is seeded with `seed + e`; `epoch_source`, if set, says which epoch it is
    (so a resumed run continues the order), otherwise the dataset counts its own iterations.

    Args:
        tensors (`dict[str, torch.Tensor]`):
            Rows to batch, every tensor with the same leading length N.
        batch_size (`int`):
            Rows per batch (the last batch of a rank may be smaller).
        shuffle (`bool`):
            A new permutation every epoch; otherwise rows in order.
        seed (`int`):
            Seed of the permutations.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool, seed: int):
        self.tensors, self.batch_size, self.shuffle, self.seed = tensors, batch_size, shuffle, seed
        self.epoch = 0
        self.epoch_source = None  # e.g. the trainer's current epoch, so a resumed run continues the order
        self.rank, self.world_size = 0, 1

    def _rows_per_rank(self) -> int:
        return next(iter(self.tensors.values())).shape[0] // self.world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return math.ceil(self._rows_per_rank() / self.batch_size)

    def __iter__(self):
        """This rank's batches of one epoch: dicts of the tensors' rows, `(≤ batch_size, …)` each."""
        n = next(iter(self.tensors.values())).shape[0]
        if self.shuffle:
            epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
            self.epoch += 1
        else:
            order = torch.arange(n)
        order = order[self.rank :: self.world_size][: self._rows_per_rank()]
        for start in range(0, order.numel(), self.batch_size):
            index = order[start : start + self.batch_size]
            yield {k: v[index] for k, v in self.tensors.items()}


class TransitionDataModule(L.LightningDataModule):
    r"""
    A transition dataset (x, u, x', r[, done]) split once into training and validation rows, with the
    normalization statistics of the training split. Subclasses implement `load_transitions()`.

    Args:
        batch_size (`int`, *optional*, defaults to 1024):
            Transitions per batch.
        val_fraction (`float`, *optional*, defaults to 0.1):
            Share of the transitions held out for validation, in (0, 1).
        seed (`int`, *optional*, defaults to 0):
            Seed of the split, of the shuffling and (in subclasses) of the data drawn.
        name (`str`, *optional*, defaults to `"dataset"`):
            What the data is, for error messages.
        normalization (`str`, *optional*, defaults to `"zscore"`):
            How the models normalize x, u, x' − x, r and (x, u) (σ and β are in these units): `zscore` (mean
            and std of the training split) or `minmax` (its range mapped to [−1, 1], as the paper's code).
    """

    def __init__(
        self,
        batch_size: int = 1024,
        val_fraction: float = 0.1,
        seed: int = 0,
        name: str = "dataset",
        normalization: str = "zscore",
    ):
        super().__init__()
        require(batch_size > 0, f"batch_size must be positive, got {batch_size}")
        require(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
        require(
            normalization in NORMALIZATIONS,
            f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}",
        )
        self.batch_size, self.val_fraction, self.seed, self.name = batch_size, val_fraction, seed, name
        self.normalization = normalization
        self.train_data: dict[str, torch.Tensor] | None = None
        self.val_data: dict[str, torch.Tensor] | None = None
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load_transitions(self) -> dict[str, torch.Tensor]:
        r"""
        The whole dataset, loaded or drawn (seeded by `seed`); checked by [`validate_transitions`].

        Returns:
            `dict[str, torch.Tensor]`: `x`, `u`, `x_next`, `r` (and optionally `done`), N rows each, in the
            domain's units.
        """
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load and check the transitions once, split them (seeded) and compute the training statistics."""
        if self.train_data is not None:
            return
        data = validate_transitions(self.load_transitions(), self.name)
        val_rows, train_rows = self.split(data["x"].shape[0])
        self.val_data = {k: v[val_rows] for k, v in data.items()}
        self.train_data = {k: v[train_rows] for k, v in data.items()}
        self.stats = self.compute_stats(self.train_data)

    def split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        Which rows are held out: a seeded random `val_fraction` of them (datasets of episodes hold out whole
        episodes instead).

        Args:
            n (`int`):
                Rows of the dataset.

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: the validation rows and the training rows (int64 indices).
        """
        num_val = int(round(n * self.val_fraction))
        require(
            num_val >= 1 and n - num_val >= 2,
            f"{self.name}: {n} transitions cannot be split into train and validation with "
            f"val_fraction={self.val_fraction}; both splits must be non-empty",
        )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return order[:num_val], order[num_val:]

    def compute_stats(self, data: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        r"""
        Offset and scale per quantity the models normalize (mean and std, or the range's midpoint and
        half-width for `normalization="minmax"`), from the training split only.

        Args:
            data (`dict[str, torch.Tensor]`):
                The training split.

        Returns:
            `dict[str, tuple[torch.Tensor, torch.Tensor]]`: `(mean, std)` for `x`, `u`, `x_next`, `dx`
            (x' − x), `r` and `xu` (x and u joined), each of shape `(dim,)` (vectors) or `(C, 1, 1)`
            (images, per channel), in the data's units.
        """
        quantities = {
            "x": data["x"],
            "u": data["u"],
            "x_next": data["x_next"],
            "dx": data["x_next"] - data["x"],
            "r": data["r"].unsqueeze(-1),
            "xu": join(data["x"], data["u"], tuple(data["x"].shape[1:])),
        }
        return {k: sample_stats(v, tuple(v.shape[1:]), self.normalization) for k, v in quantities.items()}

    def _loader(self, data, shuffle: bool, seed_offset: int) -> DataLoader:
        dataset = ShuffledBatches(data, self.batch_size, shuffle, self.seed + seed_offset)
        trainer = self.trainer
        if trainer is not None:
            dataset.rank, dataset.world_size = trainer.global_rank, trainer.world_size
            dataset.epoch_source = lambda: trainer.current_epoch
        return DataLoader(dataset, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        """Shuffled whole batches of the training split (a new order every epoch), sharded by rank."""
        return self._loader(self.train_data, shuffle=True, seed_offset=1)

    def val_dataloader(self) -> DataLoader:
        """The validation split in order, in whole batches, sharded by rank."""
        return self._loader(self.val_data, shuffle=False, seed_offset=0)

    @property
    def all_data(self) -> dict[str, torch.Tensor]:
        """Train and validation transitions together (for exact-distance oracles and plots), `(N, …)` each."""
        return {k: torch.cat([self.train_data[k], self.val_data[k]]) for k in self.train_data}


class SampledDataModule(TransitionDataModule):
    r"""
    Transitions drawn from the true env in one seeded batch: `num_samples` states and actions from
    `env.sample_states` and `env.sample_actions`, stepped and rewarded by the env
    ([`~SampledDataModule.transitions`]). Subclasses change how the pairs are drawn (`load_transitions`) or
    what a pair becomes (`transitions`).

    Args:
        env (`Env`):
            The domain's true env.
        num_samples (`int`):
            Transitions to draw.
        **kwargs:
            [`TransitionDataModule`] arguments (`batch_size`, `val_fraction`, `seed`).
    """

    def __init__(self, env, num_samples: int, **kwargs):
        super().__init__(name=f"{env.name} dataset", **kwargs)
        require(num_samples > 0, f"num_samples must be positive, got {num_samples}")
        self.env, self.num_samples = env, int(num_samples)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        x = self.env.sample_states(self.num_samples, generator)
        u = self.env.sample_actions(self.num_samples, generator)
        return self.transitions(x, u)

    def transitions(self, x: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
        r"""
        The transitions of drawn pairs under the true env.

        Args:
            x (`torch.Tensor` of shape `(N, *state_shape)`):
                States, in the env's units.
            u (`torch.Tensor` of shape `(N, *action_shape)`):
                Actions, in the env's units.

        Returns:
            `dict[str, torch.Tensor]`: `x`, `u`, `x_next` = env.step(x, u) and `r` = env.reward(x, u) `(N,)`.
        """
        return {"x": x, "u": u, "x_next": self.env.step(x, u), "r": self.env.reward(x, u)}
