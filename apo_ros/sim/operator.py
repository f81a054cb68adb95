"""`SimulatedOperator`: stands in for the person at the SpaceMouse.

It watches the running policy and compares what the policy does with what a good action at the
*current* state is: the scripted expert's action computed from the state alone (`StateExpert`,
no remembered plan phase). It takes over the way people do: when the policy has been visibly
off for a few steps (or is about to fail outright: closing the gripper far from the object,
dropping or knocking the object), after a reaction time. While it drives, its action is that
same function of the current state (plus optional noise), so the same state always gets the same
correction, and at the states the demos visit it is the demos' action: the corrections never
contradict the demos. It hands back once the policy's own proposal agrees with the expert again
for a few steps (or the grasp it had to redo is done).

That shape matters for APO: the K = 10 policy steps before each intervention become the
"undesirable" samples, so they must be steps that really were going wrong (with the defaults at
least `deviation_steps` - 1 + `reaction_steps` = 7 of them deviate from the expert), and the
intervention must end so the policy keeps control for most of the episode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from apo_ros.sim.experts import StateExpert


@dataclass
class OperatorConfig:
    # --- when a take-over is allowed -------------------------------------------------------------
    min_policy_steps_before_takeover: int = 10  # policy keeps control at least this long at the
    # start and after every hand-back, so the K = 10 steps before an intervention are policy steps
    reaction_steps: int = 3  # control steps between the trigger and grabbing the device (a person's
    # reaction time: ~0.3 s at 10 Hz); the policy keeps driving meanwhile
    # --- rule: the policy's action deviates from a good action at this state ---------------------
    deviation_enabled: bool = True
    # A policy step deviates when the gripper commands disagree (one < 0.5, the other >= 0.5), or
    # the rotation differs by more than deviation_rotation, or the translation differs by more
    # than deviation_translation AND the policy either goes against the expert's direction
    # (cosine below deviation_cosine) or nearly stalls (under deviation_stall of the expert's
    # speed). A different but forward-going route (x first, then y; carrying a little lower) is
    # not a failure a person steps in for.
    deviation_translation: float = 0.02  # m, |policy dx,dy,dz - expert dx,dy,dz|
    deviation_cosine: float = 0.0  # cosine between the two translations
    deviation_stall: float = 0.25  # fraction of the expert's translation
    deviation_rotation: float = 0.2  # rad, |rotation-vector difference|
    deviation_steps: int = 5  # deviating steps needed ...
    deviation_window: int = 6  # ... among the last this many policy steps
    # --- rule: grasp about to miss ------------------------------------------------------------------
    miss_enabled: bool = True
    miss_distance: float = 0.03  # m: the policy closes the gripper farther than this from the grasp point
    miss_steps: int = 3  # consecutive steps of closing that far away
    # --- rule: object dropped or knocked away ---------------------------------------------------------
    drop_enabled: bool = True  # the object left the hand before reaching the goal
    knock_distance: float = 0.04  # m the object may be pushed around (not held) before it counts
    # --- hand-back ------------------------------------------------------------------------------------
    min_intervention_steps: int = 4  # a person holds on at least this long
    max_intervention_steps: int = 40  # and lets go after this long whatever happened
    on_track_steps: int = 3  # let go once the policy's proposal has agreed with the expert (no
    # deviation) on this many consecutive steps, or once the grasp the person had to redo is done
    # --- how the human drives ---------------------------------------------------------------------
    human_noise: float = 0.0  # expert action noise scale while correcting (0 = the expert's action
    # at this state exactly; 1 = about 1 cm std per step at full speed)
    # --- waiting and giving up ----------------------------------------------------------------
    settle_speed: float = 0.005  # m per control step: while the loose object moves faster, the
    # person holds the arm still (no chasing a rolling object) ...
    max_wait_steps: int = 30  # ... for at most this many steps in a row
    give_up_after_timeouts: int = 2  # interventions that time out before the person gives up on
    # the episode (it ends as a failure with reason "operator_gave_up", so it can be excluded)

    def __post_init__(self):
        for name in ("min_policy_steps_before_takeover", "reaction_steps", "miss_steps",
                     "min_intervention_steps", "max_wait_steps", "give_up_after_timeouts"):
            if getattr(self, name) < 0:
                raise ValueError(f"OperatorConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.deviation_steps <= self.deviation_window:
            raise ValueError(f"OperatorConfig needs 1 <= deviation_steps <= deviation_window, got "
                             f"{self.deviation_steps} and {self.deviation_window}")
        if self.on_track_steps < 1 or self.max_intervention_steps < 1:
            raise ValueError("OperatorConfig.on_track_steps and max_intervention_steps must be >= 1")
        if self.human_noise < 0:
            raise ValueError(f"OperatorConfig.human_noise must be >= 0, got {self.human_noise}")


INTERVENTION_OUTCOMES = ("recovered", "timed_out", "task_done", "episode_ended")
RULES = ("deviation", "grasp_miss", "dropped", "knocked")


@dataclass
class Intervention:
    start_step: int  # env.step_count when the operator took over (first human action's index)
    rule: str  # which rule triggered it (RULES)
    end_step: int | None = None  # env.step_count when control went back to the policy
    failed_stage: int = 0  # stage (0 grasp, 1 transport) in which the policy went wrong
    end_stage: int | None = None  # stage when control went back
    # recovered: handed back on track; timed_out: let go after max_intervention_steps without
    # recovering; task_done: the task succeeded while the person drove; episode_ended: the
    # episode ended otherwise (failure, time limit, the person gave up) during the intervention
    outcome: str | None = None
    wait_steps: int = 0  # steps the person held still waiting for the object to settle
    trigger_step: int | None = None  # env.step_count when the rule fired (start - reaction time)


def deviates(policy_action, expert_action, config: OperatorConfig) -> bool:
    """Whether a policy action is off the expert's action at the same state (OperatorConfig's
    deviation_* thresholds); a malformed action always is."""
    dt, dr, dg = action_deviation(policy_action, expert_action)
    if dg or dr > config.deviation_rotation:
        return True
    if dt <= config.deviation_translation:
        return False
    p = np.asarray(policy_action, dtype=float).reshape(-1)[:3]
    e = np.asarray(expert_action, dtype=float).reshape(-1)[:3]
    speed_p, speed_e = float(np.linalg.norm(p)), float(np.linalg.norm(e))
    if speed_e < 1e-3 or speed_p < config.deviation_stall * speed_e:
        return True
    return float(p @ e) / (speed_p * speed_e) < config.deviation_cosine


def action_deviation(policy_action, expert_action) -> tuple[float, float, bool]:
    """(translation difference in m, rotation difference in rad, gripper commands disagree)."""
    p = np.asarray(policy_action, dtype=float).reshape(-1)
    e = np.asarray(expert_action, dtype=float).reshape(-1)
    if p.size != 7 or not np.all(np.isfinite(p)):
        return np.inf, np.inf, True
    return (float(np.linalg.norm(p[:3] - e[:3])), float(np.linalg.norm(p[3:6] - e[3:6])),
            bool((p[6] < 0.5) != (e[6] < 0.5)))


@dataclass
class _Watch:
    """What the operator tracks while the policy drives (reset at every hand-back)."""

    stage: int = -1
    deviating: deque = field(default_factory=deque)
    closing_far: int = 0
    object_anchor: np.ndarray | None = None


class SimulatedOperator:
    """Decides, step by step, whether the human overrides the policy. Call `reset(env)` after
    `env.reset`, then `step(env, proposed_action)` before each `env.step`: it returns the human's
    action while intervening, None while the policy keeps control.

    `steps` logs every step (source, the policy's proposal, the expert's action at that state,
    whether the proposal deviated) for `apo_ros.sim.operator_metrics`."""

    def __init__(self, task: str, config: OperatorConfig | None = None, seed: int = 0):
        self.task = task
        self.config = config or OperatorConfig()
        self.reference = StateExpert(task)  # the good action at a state (noise-free)
        self.expert = StateExpert(task, noise=self.config.human_noise, seed=seed)  # how the person drives
        self.intervening = False
        self.interventions = 0
        self.history: list[Intervention] = []
        self.steps: list[dict] = []
        self.last_rule: str | None = None
        self.gave_up: str | None = None  # set when the person gives up on the episode
        self._reset_state(None)

    def _reset_state(self, env) -> None:
        self._policy_steps = 0
        self._human_steps = 0
        self._pending: tuple[int, str, int] | None = None
        self._watch = _Watch(deviating=deque(maxlen=max(1, self.config.deviation_window)))
        self._on_track = 0
        self._failed_stage = 0
        self._object_prev = None if env is None else env.body_pos(self.reference.task.object_body)
        self._object_speed = 0.0
        self._waiting = 0
        self._handback_outcome = "recovered"

    def reset(self, env) -> None:
        self.intervening = False
        self.interventions = 0
        self.history = []
        self.steps = []
        self.last_rule = None
        self.gave_up = None
        self._reset_state(env)

    @property
    def object_speed(self) -> float:
        """How far the task's object moved over the last control step (m)."""
        return self._object_speed

    def stage(self, env) -> int:
        """0: getting the object into the hand, 1: taking it to the goal, 2: done."""
        return self.reference.stage(env)

    def deviates(self, proposed_action, expert_action) -> bool:
        """Whether a policy action is off the expert's action at this state (the thresholds)."""
        return deviates(proposed_action, expert_action, self.config)

    def correction(self, env) -> np.ndarray:
        """What the person commands at this state (a function of the state; plus noise if set)."""
        return self.expert.act(env)

    def step(self, env, proposed_action) -> np.ndarray | None:
        stage = self.stage(env)
        obj = env.body_pos(self.reference.task.object_body)
        self._object_speed = 0.0 if self._object_prev is None else float(
            np.linalg.norm(obj - self._object_prev))
        self._object_prev = obj
        good = self.reference.act(env)
        deviated = self.deviates(proposed_action, good)
        out = self._decide(env, proposed_action, good, deviated, stage)
        proposal = np.asarray(proposed_action, dtype=float).reshape(-1)
        self.steps.append({"step": int(env.step_count), "human": out is not None,
                           "proposed": proposal.copy(), "expert": good,
                           "executed": None if out is None else np.asarray(out, dtype=float).copy(),
                           "deviated": bool(deviated)})
        return out

    def _decide(self, env, proposed_action, good, deviated: bool, stage: int) -> np.ndarray | None:
        cfg = self.config
        if self.intervening:
            if self._should_wait(env):
                # A person does not chase a rolling object: hold still until it comes to rest.
                self._waiting += 1
                self.history[-1].wait_steps += 1
                return self._hold(env)
            self._waiting = 0
            self._on_track = 0 if deviated else self._on_track + 1
            if self._should_hand_back(stage):
                self._hand_back(env, stage)
                if self.gave_up is not None:
                    return None
            else:
                self._human_steps += 1
                return good if cfg.human_noise == 0 else self.correction(env)

        rule = self._watch_policy(env, proposed_action, good, deviated, stage)
        if rule is not None and self._pending is None:
            self._pending = (cfg.reaction_steps, rule, int(env.step_count))
        if self._pending is not None:
            wait, rule, fired_at = self._pending
            if wait <= 0 and self._policy_steps >= cfg.min_policy_steps_before_takeover:
                return self._take_over(env, rule, stage, fired_at)
            self._pending = (wait - 1, rule, fired_at)
        self._policy_steps += 1
        return None

    # ---- rules ------------------------------------------------------------------------------
    def _watch_policy(self, env, proposed_action, good, deviated: bool, stage: int) -> str | None:
        cfg, w = self.config, self._watch
        obj = env.body_pos(self.reference.task.object_body)
        fired: str | None = None
        if stage != w.stage:
            if cfg.drop_enabled and w.stage == 1 and stage == 0:
                fired = "dropped"
            w.stage = stage
            w.object_anchor = obj.copy()
        if stage == 2:  # done: nothing to watch
            return fired
        # A grasp about to miss: the policy closes the gripper far from the grasp point.
        if cfg.miss_enabled and stage == 0:
            action = np.asarray(proposed_action, dtype=float).reshape(-1)
            closing = action.size == 7 and np.isfinite(action[6]) and action[6] < 0.5
            grasp, _ = self.reference.task.grasp_target(env)
            far = float(np.linalg.norm(env.tcp_pos() - grasp)) > cfg.miss_distance
            w.closing_far = w.closing_far + 1 if (closing and far) else 0
            if w.closing_far >= cfg.miss_steps:
                fired = fired or "grasp_miss"
        if cfg.drop_enabled and stage == 0 and w.object_anchor is not None:
            if float(np.linalg.norm(obj - w.object_anchor)) > cfg.knock_distance:
                fired = fired or "knocked"
        # Off the good action at this state, on most of the last few steps.
        w.deviating.append(bool(deviated))
        if cfg.deviation_enabled and sum(w.deviating) >= cfg.deviation_steps:
            fired = fired or "deviation"
        return fired

    # ---- take-over and hand-back ----------------------------------------------------------------
    def _take_over(self, env, rule: str, stage: int, fired_at: int | None = None) -> np.ndarray:
        self.intervening = True
        self.interventions += 1
        self.last_rule = rule
        self._pending = None
        self._human_steps = 1
        self._failed_stage = stage
        self._on_track = 0
        self.history.append(Intervention(start_step=env.step_count, rule=rule, failed_stage=stage,
                                         trigger_step=fired_at))
        return self.correction(env)

    def _should_wait(self, env) -> bool:
        if self._object_speed <= self.config.settle_speed:
            return False
        if env.is_grasped(self.reference.task.object_body):
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

    def _should_hand_back(self, stage: int) -> bool:
        """Whether to let go now; sets self._handback_outcome (recovered / timed_out)."""
        cfg = self.config
        if self._human_steps < cfg.min_intervention_steps:
            return False
        self._handback_outcome = "recovered"
        redone = self.history[-1].rule in ("grasp_miss", "dropped", "knocked")
        if redone and stage > self._failed_stage:  # the grasp that failed is done again
            return True
        if self._on_track >= cfg.on_track_steps:  # the policy wants what the person does
            return True
        if self._human_steps >= cfg.max_intervention_steps:
            self._handback_outcome = "timed_out"
            return True
        return False

    def _hand_back(self, env, stage: int) -> None:
        self.intervening = False
        if self.history:
            last = self.history[-1]
            last.end_step = env.step_count
            last.end_stage = stage
            timed_out = self._handback_outcome == "timed_out"
            last.outcome = self._handback_outcome
            timeouts = sum(i.outcome == "timed_out" for i in self.history)
            if timed_out and timeouts >= self.config.give_up_after_timeouts:
                self.gave_up = "operator_gave_up"
        self._reset_state(env)
