"""trainer_node: trains one round from the recorded bags on request and announces the checkpoint.

Core: apo_ros.runtime.TrainingRounds (one round at a time in a background thread, each round
starting from the last checkpoint) around apo_ros.training.train_policy.
Services    trainer/train_round (std_srvs/Trigger: returns at once, training runs in the background)
Publishes   policy/checkpoint (String, latched: the new checkpoint dir; policy_node hot-swaps to it)
            trainer/status (String: "round N started|done: PATH|failed: ERROR")
            /diagnostics (rounds done, the current checkpoint, busy)
Parameters  config/trainer_node.yaml (read-only: a round is configured when the node starts)
"""

from __future__ import annotations

from typing import Any

from std_msgs.msg import String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import (
    LATCHED_QOS,
    STREAM_QOS,
    ApoNode,
    Param,
    StartupError,
    run,
    safe_publish,
    trigger_reply,
)
from apo_ros.runtime.rounds import RoundResult, TrainingRounds, make_train_fn


class TrainerNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("trainer_node")
        p = self.declare({"init_checkpoint": "", "demos_dir": "demos", "bags_dir": "bags",
                           "out_dir": "checkpoints", "train_config": "",
                           "method": "apo",
                           "steps": Param(500, low=1, high=10_000_000), "device": ""})
        if not p["init_checkpoint"]:
            raise StartupError("set 'init_checkpoint' (the deployed checkpoint)")
        train_fn = make_train_fn(demos=[str(p["demos_dir"])], data=[str(p["bags_dir"])],
                                 config_path=str(p["train_config"]), method=str(p["method"]),
                                 steps=int(p["steps"]), device=str(p["device"]) or None)
        self.rounds = TrainingRounds(train_fn, str(p["init_checkpoint"]), str(p["out_dir"]),
                                     on_done=self.on_done)
        self.checkpoint_pub = self.create_publisher(String, "policy/checkpoint", LATCHED_QOS)
        self.status_pub = self.create_publisher(String, "trainer/status", STREAM_QOS)
        self.create_service(Trigger, "trainer/train_round", self.on_train_round)
        self.done = 0
        self.start_diagnostics()

    def on_train_round(self, request: Any, response: Any) -> Any:
        started, message = self.rounds.request()
        self.status_pub.publish(String(data=message))
        return trigger_reply(response, started, message)

    def on_done(self, result: RoundResult) -> None:  # training thread; publish is thread-safe
        self.done += 1
        if result.checkpoint:
            safe_publish(self.checkpoint_pub, String(data=result.checkpoint))
            safe_publish(self.status_pub, String(data=f"round {result.index} done: {result.checkpoint}"))
            self.get_logger().info(f"round {result.index}: new checkpoint {result.checkpoint}")
        else:
            safe_publish(self.status_pub, String(data=f"round {result.index} failed: {result.error}"))
            self.get_logger().error(f"round {result.index} failed: {result.error}")


    def diagnostic_values(self) -> dict[str, Any]:
        return {"rounds finished": self.done, "checkpoint": self.rounds.current,
                "training": self.rounds.busy}

    def diagnostic_status(self) -> tuple[int, str]:
        return 0, "training a round" if self.rounds.busy else "idle"


def main(args: list[str] | None = None) -> int:
    return run(TrainerNode, "trainer_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
