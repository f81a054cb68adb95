"""policy_node: runs a policy checkpoint on the live observation stream.

Core: apo_ros.runtime.PolicyRunner (action queue, SafetyFilter, hot-swap, background inference)
fed by an ObservationAssembler. Each new observation is a control tick: the action planned for it
is published at once (none: no motion, counted). Paused unless teleop/mode is autonomous; the
queue is flushed at the hand-back.
Subscribes  camera/<name>/image_raw, joint_states, ee_pose, gripper/state, object_poses, instruction,
            policy/checkpoint (latched: a checkpoint dir to hot-swap to), teleop/mode
Publishes   policy/command (JointState: stamp = its chunk's observation, frame_id policy, chunk
            provenance: recording/chunks.py), action/proposed (before the filter), action/tokens
            (the proposal's token ids), policy/active (latched JSON {policy_id, stats_id, checkpoint})
Services    policy/replan (std_srvs/Trigger); parameters: config/policy_node.yaml
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.nodes.common import (
    LATCHED_QOS,
    RECORD_QOS,
    SENSOR_QOS_CHOICES,
    STREAM_QOS,
    ApoNode,
    Param,
    StartupError,
    run,
    safe_publish,
    trigger_reply,
)
from apo_ros.recording import chunks
from apo_ros.recording import messages as M
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.ros_io import AssemblerConfig, ObservationAssembler
from apo_ros.serving.source import open_policy


class PolicyNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("policy_node")
        p = self.declare({"checkpoint": "", "device": "cpu", "cameras": ["front", "wrist"],
                          "max_skew_s": Param(0.05, low=0.0, high=10.0), "safety_config": "",
                          "rate_hz": Param(10.0, low=0.1, high=1000.0), "replan_every": 0,
                          "execution": "async", "refill_steps": -1, "refill_s": 0.0, "merge": "replace",
                          "horizon_s": 1.0, "ensemble_decay": 0.01, "crossfade_steps": 0,
                          "instruction": "", "sensor_qos": Param("auto", choices=SENSOR_QOS_CHOICES)},
                         appliers={"instruction": lambda v: self.assembler.set_instruction(str(v)),
                                   "max_skew_s": lambda v: setattr(self.assembler.config, "max_skew_s", v)})
        if not p["checkpoint"]:
            raise StartupError("set 'checkpoint' to a checkpoint directory or ws://HOST:PORT")
        self.device, self.checkpoint, self.types = str(p["device"]), str(p["checkpoint"]), M.rclpy_types()
        # the one loader for a directory or ws://HOST:PORT (a policy served by `apo-ros serve`)
        policy = open_policy(self.checkpoint, device=self.device)
        # the policy's own inputs: its cameras (none for a state policy), its object poses
        cameras, objects = tuple(policy.cameras), policy.uses_object_state
        # the instruction: the parameter, else the policy's only one; an instruction message wins
        known = policy.instructions
        instruction = str(p["instruction"]) or (known[0] if len(known) == 1 else "")
        self.assembler = ObservationAssembler(AssemblerConfig(cameras, float(p["max_skew_s"]),
                                                              instruction, object_poses=objects))
        try:
            config = RunnerConfig.from_parameters(p, background=True)
        except ValueError as err:
            raise StartupError(str(err)) from None
        self.runner = PolicyRunner(policy, load_safety_filter(p["safety_config"]), config,
                                   policy_id=policy.policy_id or str(p["checkpoint"]))
        self.command_pub = self.create_publisher(JointState, "policy/command", RECORD_QOS)
        self.proposed_pub = self.create_publisher(JointState, "action/proposed", RECORD_QOS)
        self.tokens_pub = self.create_publisher(JointState, "action/tokens", RECORD_QOS)
        self.active_pub = self.create_publisher(String, "policy/active", LATCHED_QOS)
        self.sensor_inputs(str(p["sensor_qos"]))  # cameras on the sensor-data profile are taken
        for cam in cameras:
            self.subscribe(Image, f"camera/{cam}/image_raw",
                           self.fed(functools.partial(self.assembler.on_image, cam)), STREAM_QOS, sensor=True)
        for topic, t, store in (("joint_states", JointState, self.assembler.on_joint_state),
                                ("ee_pose", PoseStamped, self.assembler.on_ee_pose),
                                ("gripper/state", JointState, self.assembler.on_gripper),
                                ("object_poses", PoseArray, self.assembler.on_object_poses)):
            if topic != "object_poses" or objects:
                self.subscribe(t, topic, self.fed(store), STREAM_QOS, sensor=True)
        self.expect([f"camera/{c}/image_raw" for c in cameras] + ["joint_states", "ee_pose", "gripper/state"]
                    + (["object_poses"] if objects else []))
        self.subscribe(String, "instruction", self.assembler.on_instruction, LATCHED_QOS)
        self.subscribe(String, "policy/checkpoint", self.on_checkpoint, LATCHED_QOS)
        self.create_service(Trigger, "policy/replan", self.on_replan)
        self.subscribe(String, "teleop/mode", self.on_mode, STREAM_QOS)
        self.announced = ""
        self.announce(self.checkpoint)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.runner.on_result = self.wake.set  # a finished chunk may still serve this tick
        self.worker = threading.Thread(target=self.work, name="policy", daemon=True)
        self.worker.start()
        self.get_logger().info(f"policy {self.runner.policy_id} on {cameras}: {config.execution}, "
                               f"merge {config.merge}")
        self.start_diagnostics()

    def diagnostic_values(self) -> dict[str, Any]:
        stats = self.runner.stats()
        return {"policy_id": self.runner.policy_id, "inference latency p50 (ms)": stats["latency_ms"]["p50"],
                **{k: stats[k] for k in ("steps", "plans", "empty_ticks", "decode_failures", "swaps")}}

    def fed(self, store: Any) -> Any:
        """A sensor callback that stores its part, then wakes the policy."""

        def call(msg: Any) -> None:
            store(msg)
            self.wake.set()

        return call

    def work(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            obs = self.assembler.observation()  # None until a complete, newer observation
            if self.stopping.is_set():
                return
            empty = self.runner.empty_ticks
            step = self.runner.tick(obs, self.now_ns())
            if self.runner.empty_ticks > empty:
                self.count("policy", "a tick had no planned action (queue empty): no motion", "empty")
            if step is not None and not step.empty:
                self.publish(step)

    def publish(self, step: Any) -> None:
        if step.policy_id != self.announced:
            self.announce(self.pending_checkpoint)
        if not step.ok:  # an unknown instruction: once per distinct text (it may be megabytes)
            reason = ", ".join(step.reasons)
            self.count("policy", f"action rejected: {reason}", reason[:200], once="instruction" in reason)
        safe_publish(self.command_pub, chunks.make_policy_action(
            self.types, step.obs_stamp_ns, step.action, "policy", chunks.of_step(step)))
        if bool(np.all(np.isfinite(step.proposed))):
            safe_publish(self.proposed_pub,
                         M.make_action(self.types, step.obs_stamp_ns, step.proposed, "policy"))
            if step.tokens is not None:  # right after its proposal: the recorder pairs them in order
                safe_publish(self.tokens_pub, M.make_action_tokens(self.types, step.obs_stamp_ns,
                                                                   step.tokens, step.token_space))

    def on_mode(self, msg: Any) -> None:  # planning goes on in HOLD: the watchdog's hold ends when it answers
        self.runner.set_active(str(msg.data) in ("autonomous", "hold"), self.now_ns())

    def announce(self, checkpoint: str) -> None:
        self.announced = self.runner.policy_id
        self.pending_checkpoint = checkpoint
        info = dict(self.runner.provenance(), checkpoint=checkpoint)
        safe_publish(self.active_pub, String(data=json.dumps(info, sort_keys=True)))

    def on_checkpoint(self, msg: Any) -> None:
        path = str(msg.data)
        if not path or path in (self.checkpoint, self.pending_checkpoint):
            return
        self.pending_checkpoint = path

        def load_and_swap() -> None:  # loading takes seconds: off the control loop
            try:
                policy = open_policy(path, device=self.device)
            except Exception as err:  # noqa: BLE001 - a bad checkpoint must not stop the node
                self.get_logger().error(f"policy/checkpoint {path}: cannot load: {err}")
                return
            self.runner.swap_policy(policy, policy.policy_id or path)
            self.get_logger().info(f"hot-swapping to {path}")

        threading.Thread(target=load_and_swap, daemon=True).start()

    def on_replan(self, request: Any, response: Any) -> Any:
        self.runner.request_replan()
        return trigger_reply(response, True, "re-planning at the next step")

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.worker.join(timeout=5.0)
        self.runner.close()


def main(args: list[str] | None = None) -> int:
    return run(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
