"""Scripted experts: privileged-state state machines that solve each task with raw 7-D actions.

One expert class serves the three tasks; the task supplies the geometry (where to grasp, which way
the fingers close, the path the object takes to its goal). The expert is reactive: `replan(env)`
picks the right phase from the current state, so the simulated operator can hand it the arm at
any moment, and a lost grasp sends it back to grasping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apo_ros.sim.kinematics import rotation_error
from apo_ros.sim.tasks import PLATE_RADIUS, LemonOnPlate, Task, get_task

PHASES = ("approach", "descend", "close", "lift", "transport", "release", "retreat", "done")


@dataclass(frozen=True)
class ExpertConfig:
    max_translation: float = 0.015  # m per control step per axis (a 0.05 m safety filter never clips)
    max_rotation: float = 0.12  # rad per control step, rotation-vector norm (filter default 0.25)
    approach_height: float = 0.09  # m above the grasp point where the descent starts
    close_steps: int = 3  # control steps the gripper is given to close
    release_steps: int = 3  # control steps the gripper is given to open
    position_tolerance: float = 0.006  # m, final approach to the grasp point / release point
    waypoint_tolerance: float = 0.012  # m, intermediate waypoints
    yaw_tolerance: float = 0.06  # rad, finger alignment before descending / threading
    descend_xy_tolerance: float = 0.025  # m: a descent goes on while the TCP is this close (across)
    # to the grasp point; farther, the object moved: line up again above it
    grasp_centre_tolerance: float = 0.008  # m across the pad width; beyond it, let go and regrasp
    stuck_steps: int = 6  # transport steps without progress before backing up and retrying
    stall_speed: float = 0.005  # m/s: a held object threaded on its fixture and slower than this
    # is caught on it (the state expert lets go there and lets gravity finish)
    noise_translation: float = 0.01  # m, std of action noise at noise = 1 and full speed
    noise_rotation: float = 0.05  # rad, std of action noise at noise = 1 and full speed
    hard_translation: float = 0.04  # m, clip after noise (still below the safety filter)
    hard_rotation: float = 0.2  # rad, clip after noise


def _down_rotation(closing_dir: np.ndarray) -> np.ndarray:
    """TCP rotation pointing straight down with the fingers closing along `closing_dir`."""
    y = np.array([closing_dir[0], closing_dir[1], 0.0])
    y /= max(np.linalg.norm(y), 1e-9)
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([np.cross(y, z), y, z])


# The gripper is symmetric, so the fingers may close along a grasp direction or its opposite.
# The expert keeps the side it chose until the other is clearly nearer (cosine margin), instead
# of switching whenever the two are about equally far (an object turning near 90 degrees from the
# fingers would make it flip the wrist back and forth every step).
ALIGN_HYSTERESIS = 0.3


def _aligned(direction: np.ndarray, current: np.ndarray, previous_sign: float = 0.0
             ) -> tuple[np.ndarray, float]:
    """(`direction` or its opposite, the sign used): the one nearer `current`, except that the
    previous choice (`previous_sign` +-1; 0 = none) is kept until the other side is nearer by
    more than ALIGN_HYSTERESIS in cosine."""
    cos = float(np.dot(direction[:2], current[:2])) / max(
        float(np.linalg.norm(direction[:2]) * np.linalg.norm(current[:2])), 1e-9)
    if previous_sign != 0.0 and previous_sign * cos > -ALIGN_HYSTERESIS:
        sign = previous_sign
    else:
        sign = 1.0 if cos >= 0 else -1.0
    return sign * direction, sign


def _yaw_between(a: np.ndarray, b: np.ndarray) -> float:
    """Signed angle (about +z) from horizontal vector a to b."""
    return float(np.arctan2(a[0] * b[1] - a[1] * b[0], a[0] * b[0] + a[1] * b[1]))


def segment_to_go(point: np.ndarray, waypoints: list[np.ndarray], segment: int
                  ) -> tuple[float, float, float]:
    """For `point` on segment `segment` of the polyline: (metres still to travel = distance to the
    segment + arc length from the nearest point on it to the end, that distance, position t in
    [0, 1] of the nearest point along the segment)."""
    pts = [np.asarray(w, dtype=float) for w in waypoints]
    seg_len = [float(np.linalg.norm(b - a)) for a, b in zip(pts[:-1], pts[1:])]
    a, b = pts[segment], pts[segment + 1]
    ab = b - a
    t = float(np.clip(np.dot(point - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    dist = float(np.linalg.norm(point - (a + t * ab)))
    return dist + (1 - t) * seg_len[segment] + sum(seg_len[segment + 1:]), dist, t


class ProgressTracker:
    """How far the task still is from done, measured along the expert's plan for the current
    stage. It follows the plan segment by segment, so lifting an object before carrying it counts
    as progress, cutting a corner of the plan does too, and wandering off counts as drift."""

    def __init__(self, expert: Expert):
        self.expert = expert
        self.reset()

    def reset(self) -> None:
        self.stage: int | None = None
        self.segment = 0
        self.start: np.ndarray | None = None

    def update(self, env) -> tuple[int, float]:
        """(stage, metres to go) for the current state."""
        stage = self.expert.stage(env)
        if stage == 2:
            self.stage = stage
            return stage, 0.0
        point = self.expert.tracked_point(env, stage)
        if stage != self.stage or self.start is None:
            self.stage, self.segment, self.start = stage, 0, point.copy()
        path = self.expert.stage_path(env, stage, self.start)
        to_go, dist, t = segment_to_go(point, path, self.segment)
        # Move on when the end of the segment is reached, or the next segment is nearer (a cut
        # through the corner); never jump ahead on to-go alone, which would reward short cuts
        # such as sliding the object straight at the goal instead of lifting it.
        while self.segment + 2 < len(path):
            nxt = segment_to_go(point, path, self.segment + 1)
            if t < 1.0 - 1e-6 and nxt[1] >= dist:
                break
            self.segment += 1
            to_go, dist, t = nxt
        return stage, to_go


class Expert:
    """Scripted expert for one task. `act(env)` returns a raw 7-D action."""

    def __init__(self, task: str, *, noise: float = 0.0, seed: int = 0,
                 config: ExpertConfig | None = None):
        self.task: Task = get_task(task)
        self.noise = float(noise)
        self.config = config or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self.phase = "approach"
        self._phase_steps = 0
        self._waypoint = 0
        self._best_to_go = np.inf
        self._stuck = 0
        self._closing_sign = 0.0  # which side of the grasp direction the fingers align to

    # ---- public -------------------------------------------------------------------------------
    def reset(self, env) -> None:
        self.replan(env)

    def replan(self, env) -> None:
        """Choose the phase that fits the current state (used at reset and at a take-over)."""
        self._closing_sign = 0.0
        if self.task.is_success(env):
            self._set("retreat")
        elif env.is_grasped(self.task.object_body):
            self._set("lift")
        else:
            self._set("approach")

    def act(self, env) -> np.ndarray:
        action = self._plan(env)
        # No noise while holding still to close or open the gripper: people keep the device
        # still for that, and a hand drifting during the squeeze makes an off-centre grasp.
        # Noise scales with the speed of the move (people are precise when they slow down for
        # the last centimetre), with a floor of a tenth of the full-speed noise.
        if self.noise > 0 and np.any(action[:6]):
            c = self.config
            speed = max(float(np.abs(action[:3]).max()) / c.max_translation,
                        float(np.linalg.norm(action[3:6])) / c.max_rotation)
            scale = self.noise * float(np.clip(speed, 0.1, 1.0))
            action[:3] += self.rng.normal(0.0, scale * c.noise_translation, 3)
            action[3:6] += self.rng.normal(0.0, scale * c.noise_rotation, 3)
        return self._clip(action, self.config.hard_translation, self.config.hard_rotation)

    # Progress measures the simulated operator watches.
    def stage(self, env) -> int:
        """0: getting the object into the hand, 1: taking it to the goal, 2: done."""
        if self.task.is_success(env):
            return 2
        return 1 if env.is_grasped(self.task.object_body) else 0

    def stage_path(self, env, stage: int, start: np.ndarray) -> list[np.ndarray]:
        """The plan for a stage as a polyline, from `start` (where the stage began): for stage 0
        the TCP via the pre-grasp point to the grasp point; for stage 1 the object point lifted
        straight up, then along the task's placing path."""
        if stage == 0:
            grasp, _ = self.task.grasp_target(env)
            return [start, grasp + [0, 0, self.config.approach_height], grasp]
        path = self.task.place_path(env)
        lifted = np.array([start[0], start[1], max(start[2], path[0][2])])
        return [start, lifted, *path]

    def tracked_point(self, env, stage: int) -> np.ndarray:
        """What moves along the stage's plan: the TCP in stage 0, the object in stage 1."""
        return env.tcp_pos() if stage == 0 else self.task.object_point(env)

    # ---- the state machine --------------------------------------------------------------------
    def _set(self, phase: str) -> None:
        self.phase = phase
        self._phase_steps = 0
        if phase in ("lift", "transport"):
            self._waypoint = 0
            self._best_to_go = np.inf
            self._stuck = 0

    def _plan(self, env) -> np.ndarray:
        c, task = self.config, self.task
        tcp, mat = env.tcp_pos(), env.tcp_mat()
        closing_now = mat[:, 1]
        grasped = env.is_grasped(task.object_body)
        self._phase_steps += 1

        if self.phase in ("lift", "transport") and not grasped:
            self._set("approach")  # dropped it: grasp again
        if self.phase == "approach":
            grasp, closing = task.grasp_target(env)
            closing, self._closing_sign = _aligned(closing, closing_now, self._closing_sign)
            pre = grasp + [0, 0, c.approach_height]
            target = pre.copy()
            # Low and away from the object (e.g. after a take-over): go up before going across.
            if np.linalg.norm(tcp[:2] - pre[:2]) > 0.03 and tcp[2] < pre[2] - 0.03:
                target = np.array([tcp[0], tcp[1], pre[2]])
            action = self._move(env, target, closing, 1.0)
            yaw_err = abs(_yaw_between(closing_now, closing))
            if np.linalg.norm(tcp - pre) < 2 * c.position_tolerance and yaw_err < c.yaw_tolerance \
                    and env.gripper_opening() > 0.8:
                self._set("descend")
            return action
        if self.phase == "descend":
            grasp, closing = task.grasp_target(env)
            closing, self._closing_sign = _aligned(closing, closing_now, self._closing_sign)
            if np.linalg.norm(tcp[:2] - grasp[:2]) > c.descend_xy_tolerance:  # it moved: line up again
                self._set("approach")
                return self._plan(env)
            if np.linalg.norm(tcp - grasp) < c.position_tolerance:
                self._set("close")  # there: close now, without a last (noisy) move
                return self._plan(env)
            return self._move(env, grasp, closing, 1.0)
        if self.phase == "close":
            action = self._hold(0.0)
            if self._phase_steps >= c.close_steps:
                # An object held near the edge of the pads slips out when carried: regrasp.
                grasp, _ = task.grasp_target(env)
                off_centre = abs(float(mat[:, 0] @ (grasp - tcp))) > c.grasp_centre_tolerance
                self._set("lift" if grasped and not off_centre else "approach")
            return action
        if self.phase == "lift":
            first = task.place_path(env)[0]
            obj = task.object_point(env)
            target = tcp + [0.0, 0.0, first[2] - obj[2]]
            target[:2] = tcp[:2]
            action = self._move(env, target, self._carry_closing(env, closing_now), 0.0)
            if obj[2] > first[2] - c.waypoint_tolerance:
                self._set("transport")
            return action
        if self.phase == "transport":
            path = task.place_path(env)
            obj = task.object_point(env)
            closing = self._carry_closing(env, closing_now)
            yaw_ok = abs(_yaw_between(closing_now, closing)) < c.yaw_tolerance
            while True:
                last = self._waypoint == len(path) - 1
                err = float(np.linalg.norm(path[self._waypoint] - obj))
                if err >= (c.position_tolerance if last else c.waypoint_tolerance) or not yaw_ok:
                    break
                if last:
                    self._set("release")  # there: let go now, without a last (noisy) move
                    return self._plan(env)
                self._waypoint += 1
                self._best_to_go, self._stuck = np.inf, 0
            if last:
                # Jammed on the last stretch (a square caught on the stick): back up and retry.
                if err < self._best_to_go - 0.002:
                    self._best_to_go, self._stuck = err, 0
                else:
                    self._stuck += 1
                if self._stuck >= c.stuck_steps:
                    self._waypoint = max(0, self._waypoint - 1)
                    self._best_to_go, self._stuck = np.inf, 0
            return self._move(env, tcp + (path[self._waypoint] - obj), closing, 0.0)
        if self.phase == "release":
            action = self._hold(1.0)
            if self._phase_steps >= c.release_steps:
                self._set("retreat")
            return action
        if self.phase == "retreat":
            target = np.array([tcp[0], tcp[1], max(tcp[2], 0.22)])
            if tcp[2] > 0.21:
                self._set("done")
            return self._move(env, target, closing_now, 1.0)
        return self._hold(1.0)  # done

    def _carry_closing(self, env, closing_now: np.ndarray) -> np.ndarray:
        """Finger direction while carrying: keep it, except where the task needs the object
        turned (the cup's handle must face the peg)."""
        yaw = self.task.carry_yaw(env)
        if yaw == 0.0:
            return closing_now
        cs, sn = np.cos(yaw), np.sin(yaw)
        return np.array([cs * closing_now[0] - sn * closing_now[1],
                         sn * closing_now[0] + cs * closing_now[1], 0.0])

    def _move(self, env, target: np.ndarray, closing: np.ndarray, gripper: float) -> np.ndarray:
        c = self.config
        action = np.zeros(7)
        action[:3] = target - env.tcp_pos()
        action[3:6] = rotation_error(_down_rotation(closing), env.tcp_mat())
        action[6] = gripper
        return self._clip(action, c.max_translation, c.max_rotation)

    @staticmethod
    def _hold(gripper: float) -> np.ndarray:
        action = np.zeros(7)
        action[6] = gripper
        return action

    @staticmethod
    def _clip(action: np.ndarray, max_translation: float, max_rotation: float) -> np.ndarray:
        out = np.asarray(action, dtype=np.float64).copy()
        out[:3] = np.clip(out[:3], -max_translation, max_translation)
        norm = float(np.linalg.norm(out[3:6]))
        if norm > max_rotation:
            out[3:6] *= max_rotation / norm
        out[6] = float(np.clip(out[6], 0.0, 1.0))
        return out


def make_expert(task: str, *, noise: float = 0.0, seed: int = 0) -> Expert:
    """A scripted expert for `task`; `noise` scales Gaussian action noise (0 = deterministic;
    1 = about 1 cm / 3 degrees per step at full speed, less when moving slowly), `seed` seeds
    that noise."""
    return Expert(task, noise=noise, seed=seed)


class StateExpert(Expert):
    """The scripted expert as a function of the current state: `act(env)` infers the phase from
    what is observable (object in hand, gripper opening, where the TCP and the object are) instead
    of remembering it, so the same state always gives the same action, whatever happened before.

    At the states the scripted `Expert` visits in its own demos the inferred phase is its phase, so
    the action is the demo's action (a handful of steps differ per episode, around the moments the
    gripper closes and opens). Off the demos it does what the expert does after `replan` from
    that state, with every phase the state already satisfies skipped. It cannot back up and retry
    a square caught on the stick as the scripted expert does (that takes memory); it lets go of an
    object threaded onto its fixture once it stops moving (`Task.threaded`, `stall_speed`), and
    gravity finishes. Nor can it keep the wrist on a side of the grasp direction by hysteresis
    (it takes the nearer side; the wrist turning towards it keeps the choice stable)."""

    def reset(self, env) -> None:
        self.phase = self.infer_phase(env)

    def replan(self, env) -> None:
        self.phase = self.infer_phase(env)

    def infer_phase(self, env) -> str:
        """The expert phase that fits the current state (see PHASES)."""
        c, task = self.config, self.task
        tcp = env.tcp_pos()
        if task.is_success(env):
            return "done" if tcp[2] > 0.21 else "retreat"
        if env.is_grasped(task.object_body):
            # Held is held: an object gripped off the pads' centre is carried (the scripted expert
            # regrasps those right after closing; a policy's off-centre grasp that holds is no
            # failure, and one that slips is caught as a drop).
            path = task.place_path(env)
            obj = task.object_point(env)
            on_path = self._waypoint_from_state(env, path, obj) > 0
            if float(np.linalg.norm(path[-1] - obj)) < c.position_tolerance and self._yaw_ok(env):
                return "release"
            if task.threaded(env) and env.body_speed(task.object_body) < c.stall_speed:
                return "release"  # caught on the fixture it is already threaded onto
            if on_path or obj[2] > path[0][2] - c.waypoint_tolerance:
                return "transport"
            return "lift"
        # Not holding it. Still at the goal (opening the gripper, or about to): finish the release.
        path = task.place_path(env)
        obj = task.object_point(env)
        if task.threaded(env) and (env.gripper_opening() < 0.8
                                   or env.body_speed(task.object_body) >= c.stall_speed):
            return "release"  # let go on the fixture: open fully, let it slide, do not regrasp
        if float(np.linalg.norm(path[-1] - obj)) < c.waypoint_tolerance and \
                float(np.linalg.norm(tcp - obj)) < 0.1 and env.gripper_command >= 0.5:
            return "release"
        grasp, closing = task.grasp_target(env)
        if float(np.linalg.norm(tcp - grasp)) < c.position_tolerance or (
                env.gripper_command < 0.5 and float(np.linalg.norm(tcp - grasp)) < 2 * c.position_tolerance
                and env.gripper_opening() > 0.05):
            return "close"  # there (or closing on it): close without moving
        pre_z = grasp[2] + c.approach_height
        closing, _ = _aligned(closing, env.tcp_mat()[:, 1])
        aligned = abs(_yaw_between(env.tcp_mat()[:, 1], closing)) < c.yaw_tolerance
        # At the pre-grasp point, lined up: descend. Already well below it (a descent under way),
        # keep descending while the expert would: within its descent tolerance across (the
        # descent turns the fingers into line as it goes).
        across = float(np.linalg.norm(tcp[:2] - grasp[:2]))
        at_pre = across < 2 * c.position_tolerance and tcp[2] < pre_z + 2 * c.position_tolerance \
            and aligned
        below_pre = across < c.descend_xy_tolerance and tcp[2] < pre_z - 2 * c.position_tolerance
        if (at_pre or below_pre) and env.gripper_opening() > 0.8:
            return "descend"
        return "approach"

    def _yaw_ok(self, env) -> bool:
        closing_now = env.tcp_mat()[:, 1]
        closing = self._carry_closing(env, closing_now)
        return abs(_yaw_between(closing_now, closing)) < self.config.yaw_tolerance

    def _waypoint_from_state(self, env, path: list[np.ndarray], obj: np.ndarray) -> int:
        """The placing-path waypoint the object is heading for: past waypoint j once it is within
        the waypoint tolerance of the segment from j to j + 1 (and, for the first, within the
        tolerance of j itself or beyond it along the segment), with the wrist turned as the
        carry needs. 0 = not on the path yet: go to its start."""
        c = self.config
        if not self._yaw_ok(env):
            # Turning the object comes first: stay at the waypoint it is nearest to.
            dists = [float(np.linalg.norm(p - obj)) for p in path]
            j = int(np.argmin(dists))
            return j if dists[j] < c.waypoint_tolerance else 0
        best = 0
        for j in range(len(path) - 1):
            a, b = path[j], path[j + 1]
            ab = b - a
            t = float(np.dot(obj - a, ab) / max(float(np.dot(ab, ab)), 1e-12))
            dist = float(np.linalg.norm(obj - (a + np.clip(t, 0.0, 1.0) * ab)))
            at_start = float(np.linalg.norm(obj - a)) < c.waypoint_tolerance
            if dist < c.waypoint_tolerance and (t > 0.0 or at_start):
                best = j + 1
        # Lowered early, but over a goal that takes the object anywhere near its centre (a plate):
        # put it down from here rather than lift it back to the carry height first.
        radius = self.final_approach_radius()
        last = path[-1]
        if best == 0 and radius > 0 and float(np.linalg.norm(obj[:2] - last[:2])) < radius \
                and last[2] - c.waypoint_tolerance < obj[2] < path[0][2] - c.waypoint_tolerance:
            best = len(path) - 1
        return best

    def final_approach_radius(self) -> float:
        """How far across from the release point a lowered object may be put down directly: on a
        plate, anywhere that still ends well inside its rim; elsewhere (a stick, a peg) 0: only
        along the placing path."""
        if isinstance(self.task, LemonOnPlate):
            return PLATE_RADIUS - 0.035
        return 0.0

    def _plan(self, env) -> np.ndarray:
        c, task = self.config, self.task
        phase = self.phase = self.infer_phase(env)
        tcp, mat = env.tcp_pos(), env.tcp_mat()
        closing_now = mat[:, 1]
        if phase == "approach":
            grasp, closing = task.grasp_target(env)
            closing, _ = _aligned(closing, closing_now)
            pre = grasp + [0, 0, c.approach_height]
            target = pre.copy()
            if np.linalg.norm(tcp[:2] - pre[:2]) > 0.03 and tcp[2] < pre[2] - 0.03:
                target = np.array([tcp[0], tcp[1], pre[2]])
            return self._move(env, target, closing, 1.0)
        if phase == "descend":
            grasp, closing = task.grasp_target(env)
            closing, _ = _aligned(closing, closing_now)
            return self._move(env, grasp, closing, 1.0)
        if phase == "close":
            return self._hold(0.0)
        if phase == "lift":
            first = task.place_path(env)[0]
            obj = task.object_point(env)
            target = tcp + [0.0, 0.0, first[2] - obj[2]]
            target[:2] = tcp[:2]
            return self._move(env, target, self._carry_closing(env, closing_now), 0.0)
        if phase == "transport":
            path = task.place_path(env)
            obj = task.object_point(env)
            j = self._waypoint_from_state(env, path, obj)
            return self._move(env, tcp + (path[j] - obj), self._carry_closing(env, closing_now), 0.0)
        if phase == "release":
            return self._hold(1.0)
        if phase == "retreat":
            target = np.array([tcp[0], tcp[1], max(tcp[2], 0.22)])
            return self._move(env, target, closing_now, 1.0)
        return self._hold(1.0)  # done


def make_state_expert(task: str, *, noise: float = 0.0, seed: int = 0) -> StateExpert:
    """The scripted expert as a function of the current state (see `StateExpert`)."""
    return StateExpert(task, noise=noise, seed=seed)


class ExpertPolicy:
    """The scripted expert behind the policy interface: `select_action(observation)` gives a
    one-action chunk, and calling it gives the action itself. The expert reads the simulator's
    privileged state, so it holds the env and ignores the observation. `reset()` at the start of
    each episode (after the env's own reset)."""

    def __init__(self, env, noise: float = 0.0, seed: int = 0):
        self.env = env
        self.expert = make_expert(env.task.name, noise=noise, seed=seed)

    def reset(self) -> None:
        self.expert.reset(self.env)

    def select_action(self, observation) -> tuple[np.ndarray, bool]:
        return self(observation)[None, :], True

    def __call__(self, observation) -> np.ndarray:
        return np.asarray(self.expert.act(self.env), dtype=np.float64)
