"""The state-based CPU token policy (kind "state"): an MLP over proprio + object poses.

Like robomimic's low_dim benchmarks, it reads the simulator's (or a perception node's) object
poses instead of images: `Observation.object_poses` (N, 7) [x, y, z, qx, qy, qz, qw] in the arm
base frame, the task's object first and its target second. Inputs:

- proprio (8-D `Observation.proprio()`): ee position (standardized), ee orientation as the 9
  rotation-matrix entries (continuous, the same for q and -q), gripper (standardized);
- per object: position (standardized) and rotation matrix (9);
- relative positions the tasks are about: each object minus the ee, the target minus the object
  (in decimetres, so a few centimetres is ~0.3);
- the instruction id (embedding).

An MLP (`layers` x `hidden`, ReLU, no BatchNorm / dropout so the policy and its frozen reference
agree in train and eval mode) gives the observation encoding; the action head is the small
policy's autoregressive bin head (`BinTokenHead`): T x 7 tokens over 256 bins, so every objective
and every tool that handles `small` handles `state` unchanged. No camera is read (`cameras == ()`):
the trainer gathers no images for it and a batch is a few hundred floats per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from apo_ros.actions.bins import BIN_LAYOUTS, DECODE_MODES
from apo_ros.actions.statistics import ActionStatistics
from apo_ros.observation import PROPRIO_DIM
from apo_ros.policies.base import TokenPolicy, pick_device
from apo_ros.policies.bin_head import BinTokenHead, normalize_instruction, quaternion_to_matrix

POSE_DIM = 7
RELATIVE_SCALE = 10.0  # relative positions in decimetres


@dataclass
class StatePolicyConfig:
    instructions: list[str] = field(default_factory=list)  # the fixed instruction list (ids = order)
    n_objects: int = 2  # object poses read (Observation.object_poses rows): object, target
    chunk_size: int = 1  # T actions per prediction (T * 7 tokens)
    n_bins: int = 256  # action bins per dimension (token ids 0..n_bins-1)
    hidden: int = 256  # width of the MLP, token embeddings and head hidden layer
    layers: int = 3  # MLP layers before the head
    instruction_dim: int = 16  # instruction embedding width
    proprio_mean: list[float] | None = None  # proprio standardization (from the statistics)
    proprio_std: list[float] | None = None
    object_mean: list[float] | None = None  # object-state standardization, 7 N values (positions used)
    object_std: list[float] | None = None
    # argmax | mean: how predictions become actions (see SmallPolicyConfig.decode)
    decode: str = "argmax"
    # grid | openvla: how token ids map to values (see SmallPolicyConfig.bin_layout)
    bin_layout: str = "grid"

    def __post_init__(self) -> None:
        self.instructions = [str(i) for i in self.instructions]
        if not self.instructions:
            raise ValueError("the state policy needs a non-empty instruction list (instructions=[...])")
        if len({normalize_instruction(i) for i in self.instructions}) != len(self.instructions):
            raise ValueError(f"instruction list has duplicates: {self.instructions}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.bin_layout not in BIN_LAYOUTS:
            raise ValueError(f"bin_layout must be one of {BIN_LAYOUTS}, got {self.bin_layout!r}")
        for name, low in (("n_objects", 1), ("chunk_size", 1), ("n_bins", 2), ("hidden", 1), ("layers", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name, size in (("proprio_mean", PROPRIO_DIM), ("proprio_std", PROPRIO_DIM),
                           ("object_mean", POSE_DIM * self.n_objects),
                           ("object_std", POSE_DIM * self.n_objects)):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"{name} must have {size} values, got {len(value)}")


class StatePolicy(BinTokenHead, TokenPolicy):
    kind = "state"
    cameras: tuple[str, ...] = ()
    uses_object_state = True
    config_class = StatePolicyConfig
    standardized = (("proprio", "proprio"), ("object_state", "object"))

    @classmethod
    def complete_options(cls, options: dict) -> None:
        """The number of objects read follows the object standardization when not given."""
        mean = options.get("object_mean")
        if mean is not None and "n_objects" not in options:
            options["n_objects"] = max(1, len(mean) // POSE_DIM)

    def __init__(self, config: StatePolicyConfig, stats: ActionStatistics, device: str | None = None):
        super().__init__(stats)
        self.config = config
        self.chunk_size = config.chunk_size
        self.object_dim = POSE_DIM * config.n_objects
        self._instruction_index = {normalize_instruction(s): i for i, s in enumerate(config.instructions)}
        n = config.n_objects
        # proprio: xyz + rotation matrix + gripper (13); objects: xyz + matrix (12 each);
        # relative: each object - ee (3 each) and target - object (3 when there are two or more)
        features = 13 + 12 * n + 3 * n + (3 if n >= 2 else 0)
        h = config.hidden
        self.instruction_embedding = nn.Embedding(len(config.instructions), config.instruction_dim)
        layers: list[nn.Module] = []
        width = features + config.instruction_dim
        for _ in range(config.layers):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers[:-1])  # the head adds its position term before its ReLU
        self._build_head(config.chunk_size, config.n_bins, h, config.bin_layout)
        pm = config.proprio_mean or [0.0] * PROPRIO_DIM
        ps = config.proprio_std or [1.0] * PROPRIO_DIM
        om = config.object_mean or [0.0] * self.object_dim
        os_ = config.object_std or [1.0] * self.object_dim
        for name, value, floor in (("proprio_mean", pm, None), ("proprio_std", ps, 1e-6),
                                   ("object_mean", om, None), ("object_std", os_, 1e-6)):
            tensor = torch.tensor(value, dtype=torch.float32)
            self.register_buffer(name, tensor if floor is None else tensor.clamp_min(floor), persistent=False)
        self.to(pick_device(device)[0])

    # ---- config ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.config)

    @classmethod
    def from_config_dict(cls, d: dict, stats: ActionStatistics, device: str | None = None) -> StatePolicy:
        unknown = sorted(set(d) - set(StatePolicyConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"state policy config has unknown keys {unknown}")
        d = dict(d)
        d.setdefault("bin_layout", "openvla")  # saved before the option existed
        return cls(StatePolicyConfig(**d), stats, device=device)

    def describe(self) -> dict:
        d = super().describe()
        d.update({"instructions": list(self.config.instructions), "n_objects": self.config.n_objects,
                  "action_tokenizer": f"bins(n_bins={self.n_bins}, {self.config.bin_layout}, "
                                      f"ids 0..{self.n_bins - 1})"})
        return d

    # ---- inputs ------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray | None, proprio: np.ndarray, instructions: Sequence[str],
                object_state: np.ndarray | None = None) -> dict:
        """images are ignored (None is fine); object_state float [B, 7 n_objects] is required."""
        proprio = np.asarray(proprio, dtype=np.float32)
        b = proprio.shape[0] if proprio.ndim == 2 else -1
        if proprio.shape != (b, PROPRIO_DIM):
            raise ValueError(f"proprio must be [B, {PROPRIO_DIM}], got {proprio.shape}")
        if object_state is None:
            raise ValueError(f"the state policy reads object poses (Observation.object_poses, "
                             f"{self.config.n_objects} x 7: object then target); none were given")
        objects = np.asarray(object_state, dtype=np.float32)
        if objects.shape != (b, self.object_dim):
            raise ValueError(f"the state policy reads {self.config.n_objects} object poses "
                             f"([B, {self.object_dim}] object state); got shape {objects.shape} "
                             f"(Observation.object_poses empty or for another task?)")
        if not (np.isfinite(objects).all() and np.isfinite(proprio).all()):
            raise ValueError("object poses or proprio contain NaN or Inf")
        if len(instructions) != b:
            raise ValueError(f"{len(instructions)} instructions for a batch of {b}")
        device = self.device
        return {"proprio": torch.from_numpy(proprio).to(device),
                "objects": torch.from_numpy(objects).to(device),
                "instruction": self.instruction_ids(instructions).to(device)}

    # ---- model -------------------------------------------------------------------------------
    def features(self, inputs: dict) -> torch.Tensor:
        """Inputs -> [B, F] state features (see the module docstring)."""
        proprio = inputs["proprio"].float()
        objects = inputs["objects"].float().reshape(proprio.shape[0], self.config.n_objects, POSE_DIM)
        p_std = (proprio - self.proprio_mean) / self.proprio_std
        ee_rot = quaternion_to_matrix(F.normalize(proprio[:, 3:7], dim=1)).reshape(-1, 9)
        o_std = ((objects.reshape(proprio.shape[0], -1) - self.object_mean) / self.object_std)
        o_std = o_std.reshape_as(objects)
        o_rot = quaternion_to_matrix(F.normalize(objects[..., 3:7], dim=-1)).reshape(objects.shape[0], -1)
        rel = [(objects[:, :, :3] - proprio[:, None, :3]).reshape(proprio.shape[0], -1)]
        if self.config.n_objects >= 2:
            rel.append(objects[:, 1, :3] - objects[:, 0, :3])
        parts = [p_std[:, :3], ee_rot, p_std[:, 7:], o_std[..., :3].reshape(proprio.shape[0], -1), o_rot,
                 torch.cat(rel, 1) * RELATIVE_SCALE, self.instruction_embedding(inputs["instruction"])]
        return torch.cat(parts, 1)

    def encode_observation(self, inputs: dict) -> torch.Tensor:
        """The MLP's output [B, hidden], shared by every token sequence scored on the same inputs."""
        return self.mlp(self.features(inputs))
