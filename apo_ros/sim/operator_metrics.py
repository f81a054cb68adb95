"""How well the (simulated or real) operator's corrections agree with the demos' expert, measured
on recorded bags.

    python -m apo_ros.sim.operator_metrics --demos DEMO_DIR DEPLOYMENT_DIR [...]

Every recorded observation carries the arm's joints and the poses of the task's bodies, so the
simulator state of a step can be restored (`restore_state`) and the scripted expert asked what it
would do there (`StateExpert`, a function of the state). Per human step this compares the
correction with:

- the expert's action at the same state: sign agreement of x/y/z (on the axes where both move
  more than 1 mm) and the mean |difference| (m);
- the nearest demo state (tool point, gripper opening and object position within `match_radius`),
  when demos are given: the same figures against that demo's recorded action (no simulator needed;
  this is how contradicting corrections were first seen);
- the policy's own proposal at that step: sign agreement (how often the correction pushes the
  policy the other way).

And for the undesirable steps (the K policy steps before each take-over, as the trainer labels
them): how many really deviated from the expert's action at their state, by the operator's
thresholds (`OperatorConfig.deviation_*`).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from apo_ros.recording import read_episodes
from apo_ros.recording.labels import label_episode
from apo_ros.sim.env import make_env
from apo_ros.sim.experts import StateExpert
from apo_ros.sim.operator import OperatorConfig, deviates

SIGN_EPS = 1e-3  # m: an axis moving less than this has no meaningful sign


def restore_state(env, observation, gripper_command: float = 1.0) -> None:
    """Put `env` in the state an observation was taken in: arm and finger joints, the poses of the
    task's bodies (the free object and the fixture), velocities zero, and the last gripper command
    (which `is_grasped` reads)."""
    info, d = env.info, env.data
    joints = np.asarray(observation.joint_positions, dtype=np.float64)
    n_arm = len(info.arm_qpos)
    d.qpos[info.arm_qpos] = joints[:n_arm]
    d.qpos[info.finger_qpos] = joints[n_arm:n_arm + len(info.finger_qpos)]
    d.qvel[:] = 0.0
    poses = np.asarray(observation.object_poses, dtype=np.float64).reshape(-1, 7)
    for body, pose in zip(env.task.state_bodies, poses):
        quat_wxyz = np.array([pose[6], pose[3], pose[4], pose[5]])
        mocap = env.model.body_mocapid[env.body_id(body)]
        if mocap >= 0:
            d.mocap_pos[mocap] = pose[:3]
            d.mocap_quat[mocap] = quat_wxyz
        else:
            adr = env.free_qpos_adr(body)
            d.qpos[adr:adr + 3] = pose[:3]
            d.qpos[adr + 3:adr + 7] = quat_wxyz
    env.gripper_command = float(gripper_command)
    env.forward()


def _sign_agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(agreeing, compared) x/y/z components where both move more than SIGN_EPS."""
    a, b = np.asarray(a)[..., :3], np.asarray(b)[..., :3]
    both = (np.abs(a) > SIGN_EPS) & (np.abs(b) > SIGN_EPS)
    return int((np.sign(a) == np.sign(b))[both].sum()), int(both.sum())


def _features(step) -> np.ndarray:
    """Where things are at a step: tool point, gripper opening (scaled to ~cm), object position."""
    obs = step.observation
    obj = np.asarray(obs.object_poses, dtype=np.float64).reshape(-1, 7)
    return np.concatenate([np.asarray(obs.ee_pose[:3], dtype=np.float64), [0.05 * float(obs.gripper)],
                           obj[0, :3] if len(obj) else np.zeros(3)])


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def operator_metrics(deployment_dirs, demo_dirs=(), *, k: int = 10, match_radius: float = 0.005,
                     config: OperatorConfig | None = None) -> dict:
    """Agreement of the human steps with the expert and the demos, and how many undesirable
    steps deviated (see the module docstring). Bags of several tasks may be mixed."""
    cfg = config or OperatorConfig()
    episodes, bad = read_episodes(list(deployment_dirs), load_images=False)
    demo_feats, demo_actions = [], []
    if demo_dirs:
        demos, _ = read_episodes(list(demo_dirs), load_images=False)
        for ep in demos:
            for s in ep.steps:
                demo_feats.append(_features(s))
                demo_actions.append(np.asarray(s.action, dtype=np.float64))
    demo_f = np.asarray(demo_feats).reshape(-1, 7)
    demo_a = np.asarray(demo_actions).reshape(-1, 7)

    envs: dict[str, tuple] = {}
    c = {"human": 0, "sign_ok": 0, "sign_n": 0, "grip_ok": 0, "policy_sign_ok": 0, "policy_sign_n": 0,
         "demo_matched": 0, "demo_sign_ok": 0, "demo_sign_n": 0, "undesirable": 0, "undesirable_deviated": 0,
         "policy_steps": 0, "policy_deviated": 0}
    diffs, demo_diffs, demo_dists = [], [], []
    try:
        for ep in episodes:
            task = ep.metadata.get("task", "")
            if task not in envs:
                envs[task] = (make_env(task, render=False), StateExpert(task))
            env, expert = envs[task]
            labels = label_episode(ep, k=k)
            previous_gripper = 1.0
            for i, step in enumerate(ep.steps):
                restore_state(env, step.observation, previous_gripper)
                previous_gripper = float(step.action[6])
                good = expert.act(env)
                if step.source == "policy":
                    off = deviates(step.action, good, cfg)
                    c["policy_steps"] += 1
                    c["policy_deviated"] += int(off)
                    if labels.undesirable[i]:
                        c["undesirable"] += 1
                        c["undesirable_deviated"] += int(off)
                    continue
                if step.source != "human":
                    continue
                c["human"] += 1
                ok, n = _sign_agreement(step.action, good)
                c["sign_ok"] += ok
                c["sign_n"] += n
                c["grip_ok"] += int((step.action[6] < 0.5) == (good[6] < 0.5))
                diffs.append(np.abs(np.asarray(step.action[:3]) - good[:3]))
                if step.proposed is not None and np.all(np.isfinite(step.proposed)):
                    ok, n = _sign_agreement(step.action, step.proposed)
                    c["policy_sign_ok"] += ok
                    c["policy_sign_n"] += n
                if len(demo_f):
                    dist = np.linalg.norm(demo_f - _features(step), axis=1)
                    j = int(np.argmin(dist))
                    demo_dists.append(float(dist[j]))
                    if dist[j] <= match_radius:
                        c["demo_matched"] += 1
                        ok, n = _sign_agreement(step.action, demo_a[j])
                        c["demo_sign_ok"] += ok
                        c["demo_sign_n"] += n
                        demo_diffs.append(np.abs(np.asarray(step.action[:3]) - demo_a[j, :3]))
    finally:
        for env, _ in envs.values():
            env.close()
    out = {
        "episodes": len(episodes), "unreadable": len(bad), "human_steps": c["human"],
        "vs_expert_at_state": {
            "xyz_sign_agreement": _ratio(c["sign_ok"], c["sign_n"]),
            "xyz_mean_abs_diff_m": round(float(np.mean(diffs)), 5) if diffs else None,
            "gripper_agreement": _ratio(c["grip_ok"], c["human"])},
        "vs_policy_proposal": {"xyz_sign_agreement": _ratio(c["policy_sign_ok"], c["policy_sign_n"])},
        "undesirable_steps": c["undesirable"],
        "undesirable_deviated": c["undesirable_deviated"],
        "undesirable_deviated_share": _ratio(c["undesirable_deviated"], c["undesirable"]),
        "policy_steps_deviated_share": _ratio(c["policy_deviated"], c["policy_steps"]),
    }
    if len(demo_f):
        out["vs_nearest_demo_state"] = {
            "match_radius_m": match_radius, "matched_human_steps": c["demo_matched"],
            "median_distance_m": round(float(np.median(demo_dists)), 5) if demo_dists else None,
            "xyz_sign_agreement": _ratio(c["demo_sign_ok"], c["demo_sign_n"]),
            "xyz_mean_abs_diff_m": round(float(np.mean(demo_diffs)), 5) if demo_diffs else None}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apo_ros.sim.operator_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deployments", nargs="+", help="bag directories with operator corrections")
    parser.add_argument("--demos", nargs="*", default=[], help="expert demo bag directories")
    parser.add_argument("--k", type=int, default=10, help="undesirable steps before each take-over")
    args = parser.parse_args(argv)
    print(json.dumps(operator_metrics(args.deployments, args.demos, k=args.k), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
