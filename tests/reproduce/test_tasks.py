"""run_tasks: a reproduction's trainings and plans as tasks that wait only for what they need."""

from __future__ import annotations

import functools
import operator
import time
from pathlib import Path

import pytest

from sgp_lightning.pieces import Task, run_tasks


def _chain() -> list[Task]:
    return [
        Task("a", functools.partial(operator.add, 1, 2)),  # 3
        Task("b", functools.partial(operator.mul, 10, 4)),  # 40
        Task("a+b", operator.add, after=("a", "b")),  # takes the results of a and b, in that order
        Task("b-a", operator.sub, after=("b", "a")),
    ]


def test_each_task_takes_the_results_it_waits_for_in_order():
    assert run_tasks(_chain()) == {"a": 3, "b": 40, "a+b": 43, "b-a": 37}


@pytest.mark.parametrize(
    "tasks",
    [
        [Task("late", operator.neg, after=("early",)), Task("early", functools.partial(operator.neg, 1))],
        [Task("x", functools.partial(operator.neg, 1)), Task("x", functools.partial(operator.neg, 2))],
    ],
    ids=["before-what-it-needs", "listed-twice"],
)
def test_a_task_before_what_it_needs_or_listed_twice_is_refused(tasks):
    with pytest.raises(ValueError, match="listed twice or before a task it takes a result from"):
        run_tasks(tasks)


def _wait_for(marker: str, seconds: float = 120.0) -> str:
    """A 'training' that ends only once another task has written `marker`."""
    deadline = time.monotonic() + seconds
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(0.05)
    return "saw the marker"


def _write(marker: str, _before: None = None) -> None:
    Path(marker).write_text("planned")


def test_a_free_worker_runs_a_ready_plan_while_the_other_still_trains(tmp_path):
    """Two workers: the long task 'train 0' holds one; 'plan 1' needs only 'train 1', so the other worker runs
    it while 'train 0' is still going. A scheduler that waited for every training first would let 'train 0'
    time out. (Two spawned interpreters: about 9 s on 2 cores.)"""
    marker = str(tmp_path / "plan_1_ran")
    tasks = [
        Task("train 0", functools.partial(_wait_for, marker)),
        Task("train 1", functools.partial(operator.neg, 1)),
        Task("plan 1", functools.partial(_write, marker), after=("train 1",)),
    ]
    assert run_tasks(tasks, workers=2)["train 0"] == "saw the marker"
    assert run_tasks(_chain(), workers=2) == run_tasks(_chain())
