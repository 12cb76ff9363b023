"""Time budgets: a run of `minutes` measures its speed after a warm-up, then fixes its steps to end on time.

The schedule completes: the learning rate stays constant during the warm-up (after a warm
start's ramp; the first half of any run) and the decay is planned over the steps that fit.
Validations and checkpoints on the way and the final save are counted; at the start of the
decay the speed is measured again and the plan corrected. Under DDP rank 0 decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator

import torch

from ..core.progress import StatusUpdate, TrainEvent, TrainingStatus
from .distributed import agreed, broadcast_int
from .plan import RunPlan, steps_for_budget
from .state import Run, Saver


class Budget:
    """Fits a run into `minutes` (from the call's start): measures the speed after a warm-up, then fixes the steps."""

    WARMUP_S = 1.0  # seconds of steps to measure the speed on (after the first step)

    def __init__(self, minutes: float, t_call: float, checkpoint_every: int) -> None:
        self.seconds, self.t_call, self.checkpoint_every = 60.0 * minutes, t_call, checkpoint_every
        self.t_first: float | None = None  # after the first step (its one-time costs are not typical)
        self.n_first = 0
        self.val_s = self.ckpt_s = 0.0
        self.replanned = False

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.seconds - (time.perf_counter() - self.t_call)

    @property
    def final_s(self) -> float:
        """Seconds to keep for the end: the last checkpoint and model file, and a margin."""
        return 2 * self.ckpt_s + 0.02 * self.seconds

    def over(self) -> bool:
        """Whether the time left is only enough to save (a slower machine than measured: stop here)."""
        return self.left() <= self.final_s

    def affords(self, seconds: float) -> bool:
        """Whether a validation or checkpoint of `seconds` still fits before the end."""
        return self.left() - seconds > self.final_s

    def ready(self, run: Run) -> bool:
        """Whether the warm-up has run long enough to plan."""
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.n_first = now, run.step
            return False
        done = run.step - self.n_first
        return done >= 3 and (now - self.t_first >= self.WARMUP_S or self.left() < 0.8 * self.seconds)

    def step_s(self, run: Run) -> float:
        """Seconds per step measured since the warm-up began (or the last plan)."""
        return (time.perf_counter() - (self.t_first or self.t_call)) / max(run.step - self.n_first, 1)

    def plan(self, run: Run, plan: RunPlan, val: bool) -> RunPlan:
        """The plan with its steps (and validation interval) fixed to fit what is left."""
        step_s = self.step_s(run)
        remaining = self.left() - self.final_s
        n_val = min(10, math.floor(0.1 * remaining / self.val_s)) if val and self.val_s > 0 else (10 if val else 0)
        val_every = plan.val_every
        if val_every is None:
            steps_est = max(1, math.floor(remaining / step_s))
            val_every = max(1, math.ceil(steps_est / max(n_val, 1)))
        n = steps_for_budget(remaining, step_s, val_every, self.val_s if val else 0.0, self.checkpoint_every,
                             self.ckpt_s)
        self.t_first, self.n_first = time.perf_counter(), run.step  # re-measure from here
        return plan.with_steps(run.step + max(n, 1), val_every=val_every)

    def replan(self, run: Run, plan: RunPlan, val: bool) -> RunPlan:
        """At the start of the decay: the steps that still fit, with the decay over exactly those."""
        self.replanned = True
        step_s = self.step_s(run)
        remaining = self.left() - self.final_s
        n = steps_for_budget(remaining, step_s, plan.val_every or 100, self.val_s if val else 0.0,
                             self.checkpoint_every, self.ckpt_s)
        total = run.step + max(n, 1)
        if abs(total - plan.total_steps) <= 0.03 * plan.total_steps:
            return plan
        return plan.with_steps(total, decay_steps=total - run.step)


Validation = Callable[[], Generator[TrainEvent, None, None]]


def _plan_budget(budget: Budget, run: Run, plan: RunPlan, validation: Validation | None, saver: Saver,
                 device: torch.device, world: int) -> Generator[TrainEvent, None, RunPlan]:
    """After the warm-up: time a validation and a checkpoint, then fix the steps (rank 0 decides)."""
    if validation is not None and budget.left() > 0.5 * budget.seconds:  # timed once (skipped when time is short)
        t = time.perf_counter()
        yield from validation()
        budget.val_s = time.perf_counter() - t
    t = time.perf_counter()
    yield from saver.save_all(TrainingStatus.RUNNING)
    budget.ckpt_s = time.perf_counter() - t
    planned = budget.plan(run, plan, validation is not None)
    steps = broadcast_int(planned.total_steps, world, device)
    val_every = broadcast_int(planned.val_every or 100, world, device)
    planned = planned.with_steps(steps, val_every=val_every)
    saver.plan = planned
    yield StatusUpdate(run.step, TrainingStatus.RUNNING, planned,
                       f"time budget {budget.seconds / 60:g} min: {steps} steps, validation every {val_every}")
    return planned


def follow_budget(budget: Budget, run: Run, plan: RunPlan, validation: Validation | None, saver: Saver,
                  device: torch.device, world: int) -> Generator[TrainEvent, None, RunPlan]:
    """After each step of a time-budgeted run: plan once the warm-up is done, correct at the start of the decay.

    `validation` runs one validation (None: the run has none); returns the plan as it now stands.
    """
    if plan.steps is None:
        if agreed(budget.ready(run), world, device):
            plan = yield from _plan_budget(budget, run, plan, validation, saver, device, world)
        return plan
    if not budget.replanned and run.step >= plan.total_steps - plan.decay:
        before = plan.total_steps
        plan = budget.replan(run, plan, validation is not None)
        plan = plan.with_steps(broadcast_int(plan.total_steps, world, device))
        saver.plan = plan
        if plan.total_steps != before:  # the plan the user was shown has changed: say so
            yield StatusUpdate(run.step, TrainingStatus.RUNNING, plan,
                               f"time budget {budget.seconds / 60:g} min: {plan.total_steps} steps (measured again)")
    if agreed(budget.over() and run.step < plan.total_steps, world, device):  # slower than measured: end on time
        plan = plan.with_steps(run.step)
        saver.plan = plan
    return plan
