"""`SimulatedOperator`: stands in for the person at the SpaceMouse.

It watches the running policy with privileged state and takes over the way people do: late,
after the policy has visibly started to go wrong (not at the first wobble), drives with the
scripted expert until the task is back on track, then lets go. That shape matters for APO: the
K = 10 policy steps before each intervention become the "undesirable" samples, so they must be
steps that really were going wrong, and the intervention must end so the policy keeps control for
most of the episode.

Progress is measured along the expert's plan (`ProgressTracker`): stage 0 = getting the object
into the hand (to-go = the TCP's remaining path via the pre-grasp point to the grasp point),
stage 1 = taking it to the goal (to-go = the object's remaining path: lift, carry, put down).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from apo_ros.sim.experts import Expert, ProgressTracker


@dataclass
class OperatorConfig:
    # --- when a take-over is allowed -------------------------------------------------------------
    min_policy_steps_before_takeover: int = 10  # policy keeps control at least this long at the
    # start and after every hand-back, so the K = 10 steps before an intervention are policy steps
    reaction_steps: int = 3  # control steps between noticing a failure and grabbing the device
    # --- rule: drift from the plan ----------------------------------------------------------------
    drift_enabled: bool = True
    drift_steps: int = 5  # to-go must have grown on this many consecutive steps ...
    drift_min_increase: float = 0.04  # ... by at least this much in total (m)
    # --- rule: grasp about to miss ------------------------------------------------------------------
    miss_enabled: bool = True
    miss_distance: float = 0.03  # m: closing the gripper farther than this from the grasp point
    miss_steps: int = 3  # consecutive steps of closing that far away
    # --- rule: no progress ----------------------------------------------------------------------------
    stall_enabled: bool = True
    stall_steps: int = 25  # steps without the to-go improving ...
    stall_min_progress: float = 0.01  # ... by at least this much (m)
    # --- rule: object dropped or knocked away ---------------------------------------------------------
    drop_enabled: bool = True  # the object left the hand before reaching the goal
    knock_distance: float = 0.04  # m the object may be pushed around (not held) before it counts
    # --- hand-back ------------------------------------------------------------------------------------
    min_intervention_steps: int = 4  # a person holds on at least this long
    max_intervention_steps: int = 40  # and lets go after this long whatever happened
    handback_when_on_track: bool = True  # let go once the stage that failed is completed, or
    # once to-go is back below the best the policy had reached before it went wrong ...
    on_track_steps: int = 3  # ... for this many consecutive steps
    # --- how the human drives ---------------------------------------------------------------------
    human_noise: float = 0.3  # expert action noise scale (people are not scripts)
    # --- waiting and giving up ----------------------------------------------------------------
    settle_speed: float = 0.005  # m per control step: while the loose object moves faster, the
    # person holds the arm still (no chasing a rolling object) ...
    max_wait_steps: int = 30  # ... for at most this many steps in a row
    give_up_after_timeouts: int = 2  # interventions that time out before the person gives up on
    # the episode (it ends as a failure with reason "operator_gave_up", so it can be excluded)


INTERVENTION_OUTCOMES = ("recovered", "timed_out", "task_done", "episode_ended")


@dataclass
class Intervention:
    start_step: int  # env.step_count when the operator took over (first human action's index)
    rule: str  # which rule triggered it
    end_step: int | None = None  # env.step_count when control went back to the policy
    failed_stage: int = 0  # stage (0 grasp, 1 transport) in which the policy went wrong
    end_stage: int | None = None  # stage when control went back
    # recovered: handed back on track; timed_out: let go after max_intervention_steps without
    # recovering; task_done: the task succeeded while the person drove; episode_ended: the
    # episode ended otherwise (failure, time limit, the person gave up) during the intervention
    outcome: str | None = None
    wait_steps: int = 0  # steps the person held still waiting for the object to settle


@dataclass
class _Watch:
    """What the operator tracks while the policy drives (reset at every hand-back)."""

    stage: int = -1
    to_go: deque = field(default_factory=lambda: deque(maxlen=64))
    best: float = np.inf
    steps_since_progress: int = 0
    closing_far: int = 0
    object_anchor: np.ndarray | None = None


class SimulatedOperator:
    """Decides, step by step, whether the human overrides the policy. Call `reset(env)` after
    `env.reset`, then `step(env, proposed_action)` before each `env.step`: it returns the human's
    action while intervening, None while the policy keeps control."""

    def __init__(self, task: str, config: OperatorConfig | None = None, seed: int = 0):
        self.task = task
        self.config = config or OperatorConfig()
        self.expert = Expert(task, noise=self.config.human_noise, seed=seed)
        self.progress = ProgressTracker(self.expert)
        self.intervening = False
        self.interventions = 0
        self.history: list[Intervention] = []
        self.last_rule: str | None = None
        self._policy_steps = 0
        self._human_steps = 0
        self._pending: tuple[int, str] | None = None
        self._watch = _Watch()
        self._recover_to = np.inf
        self._on_track = 0
        self._failed_stage = 0
        self._object_prev: np.ndarray | None = None
        self._object_speed = 0.0
        self._waiting = 0
        self._handback_outcome = "recovered"
        self.gave_up: str | None = None  # set when the person gives up on the episode

    def reset(self, env) -> None:
        self.intervening = False
        self.interventions = 0
        self.history = []
        self.last_rule = None
        self._policy_steps = 0
        self._human_steps = 0
        self._pending = None
        self._watch = _Watch()
        self._object_prev = env.body_pos(self.expert.task.object_body)
        self._object_speed = 0.0
        self._waiting = 0
        self.gave_up = None
        self.progress.reset()
        self.expert.reset(env)

    @property
    def object_speed(self) -> float:
        """How far the task's object moved over the last control step (m)."""
        return self._object_speed

    def step(self, env, proposed_action) -> np.ndarray | None:
        cfg = self.config
        stage, to_go = self.progress.update(env)
        obj = env.body_pos(self.expert.task.object_body)
        self._object_speed = 0.0 if self._object_prev is None else float(
            np.linalg.norm(obj - self._object_prev))
        self._object_prev = obj

        if self.intervening:
            if self._should_wait(env):
                # A person does not chase a rolling object: hold still until it comes to rest.
                self._waiting += 1
                self.history[-1].wait_steps += 1
                return self._hold(env)
            self._waiting = 0
            if self._should_hand_back(stage, to_go):
                self._hand_back(env, stage)
                if self.gave_up is not None:
                    return None
            else:
                self._human_steps += 1
                return self.expert.act(env)

        rule = self._watch_policy(env, proposed_action, stage, to_go)
        if rule is not None and self._pending is None:
            self._pending = (cfg.reaction_steps, rule)
        if self._pending is not None:
            wait, rule = self._pending
            if wait <= 0 and self._policy_steps >= cfg.min_policy_steps_before_takeover:
                return self._take_over(env, rule, stage)
            self._pending = (wait - 1, rule)
        self._policy_steps += 1
        return None

    # ---- rules ------------------------------------------------------------------------------
    def _watch_policy(self, env, proposed_action, stage: int, to_go: float) -> str | None:
        cfg, w = self.config, self._watch
        obj = env.body_pos(self.expert.task.object_body)
        fired: str | None = None
        if stage != w.stage:
            if cfg.drop_enabled and w.stage == 1 and stage == 0:
                fired = "dropped"
            w.stage = stage
            w.to_go.clear()
            w.best = np.inf
            w.steps_since_progress = 0
            w.object_anchor = obj.copy()
        if stage == 2:  # done: nothing to watch
            return fired
        w.to_go.append(to_go)
        if to_go < w.best - cfg.stall_min_progress:
            w.best = to_go
            w.steps_since_progress = 0
        else:
            w.steps_since_progress += 1
            w.best = min(w.best, to_go)

        # Drift: to-go grew on each of the last drift_steps steps, by drift_min_increase in all.
        hist = list(w.to_go)
        if cfg.drift_enabled and len(hist) > cfg.drift_steps:
            recent = hist[-(cfg.drift_steps + 1):]
            growing = all(b > a + 1e-3 for a, b in zip(recent[:-1], recent[1:]))
            if growing and recent[-1] - recent[0] >= cfg.drift_min_increase:
                fired = fired or "drift"
        # A grasp about to miss: the policy closes the gripper far from the grasp point.
        if cfg.miss_enabled and stage == 0:
            action = np.asarray(proposed_action, dtype=float).reshape(-1)
            closing = action.size == 7 and np.isfinite(action[6]) and action[6] < 0.5
            grasp, _ = self.expert.task.grasp_target(env)
            far = float(np.linalg.norm(env.tcp_pos() - grasp)) > cfg.miss_distance
            w.closing_far = w.closing_far + 1 if (closing and far) else 0
            if w.closing_far >= cfg.miss_steps:
                fired = fired or "grasp_miss"
        if cfg.stall_enabled and w.steps_since_progress >= cfg.stall_steps:
            fired = fired or "no_progress"
        if cfg.drop_enabled and stage == 0 and w.object_anchor is not None:
            if float(np.linalg.norm(obj - w.object_anchor)) > cfg.knock_distance:
                fired = fired or "knocked"
        return fired

    # ---- take-over and hand-back ----------------------------------------------------------------
    def _take_over(self, env, rule: str, stage: int) -> np.ndarray:
        self.intervening = True
        self.interventions += 1
        self.last_rule = rule
        self._pending = None
        self._human_steps = 1
        self._failed_stage = stage
        # A drifting or stalling policy is handed the arm back once the human has undone the
        # damage; a missed grasp or a dropped object only once the grasp is done again.
        recoverable = rule in ("drift", "no_progress") and self._watch.stage == stage
        self._recover_to = self._watch.best if recoverable else -np.inf
        self._on_track = 0
        self.history.append(Intervention(start_step=env.step_count, rule=rule, failed_stage=stage))
        self.expert.replan(env)
        return self.expert.act(env)

    def _should_wait(self, env) -> bool:
        if self._object_speed <= self.config.settle_speed:
            return False
        if env.is_grasped(self.expert.task.object_body):
            return False  # it moves because the person carries it
        if self._waiting >= self.config.max_wait_steps:
            return False
        return True

    def _hold(self, env) -> np.ndarray:
        action = np.zeros(7)
        action[6] = env.gripper_command
        return action

    def end_episode(self, success: bool) -> None:
        """The episode ended: an intervention still open gets its outcome."""
        if self.intervening and self.history and self.history[-1].outcome is None:
            self.history[-1].outcome = "task_done" if success else "episode_ended"
        self.intervening = False

    def intervention_outcomes(self) -> list[str]:
        return [i.outcome or "episode_ended" for i in self.history]

    def _should_hand_back(self, stage: int, to_go: float) -> bool:
        """Whether to let go now; sets self._handback_outcome (recovered / timed_out)."""
        cfg = self.config
        if self._human_steps < cfg.min_intervention_steps:
            return False
        self._handback_outcome = "recovered"
        if stage > self._failed_stage:  # the stage that failed is done
            return True
        if cfg.handback_when_on_track and stage == self._failed_stage:
            self._on_track = self._on_track + 1 if to_go < self._recover_to - 0.005 else 0
            if self._on_track >= cfg.on_track_steps:
                return True
        if self._human_steps >= cfg.max_intervention_steps:
            self._handback_outcome = "timed_out"
            return True
        return False

    def _hand_back(self, env, stage: int) -> None:
        self.intervening = False
        self._policy_steps = 0
        self._watch = _Watch()
        self.progress.reset()
        if self.history:
            last = self.history[-1]
            last.end_step = env.step_count
            last.end_stage = stage
            timed_out = self._handback_outcome == "timed_out"
            last.outcome = self._handback_outcome
            timeouts = sum(i.outcome == "timed_out" for i in self.history)
            if timed_out and timeouts >= self.config.give_up_after_timeouts:
                self.gave_up = "operator_gave_up"
