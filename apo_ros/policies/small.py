"""The small CPU token policy (kind "small").

front + wrist images (64x64) + proprio (8-D) + instruction id -> 7 action tokens over 256 bins
(BinTokenizer(vocab_size=256): ids 0..255), autoregressive over the action dimensions: the head of
dimension d sees the embeddings of the tokens before d (teacher-forced in training), so the
gripper token is conditioned on the arm tokens as in a VLA. With chunk_size T > 1 the sequence is
T x 7 tokens, still left to right.

Why this shape (2-core CPU, >= 1,000 training samples/s at batch 128):
- one shared encoder over the two cameras stacked as 6 channels (early fusion; a per-camera encoder
  doubles the cost), plus 2 coordinate channels so the first layer knows where it looks;
- three narrow convs (two stride-2), then a spatial softmax: each of the C feature maps becomes the
  expected (x, y) of its activation — object positions, which is what the tasks need — plus the
  maps' mean activation (what is there);
- the autoregressive part is additive: context_d = trunk + pos_d + sum_{j<d} emb_j[token_j], then
  a shared hidden layer and one 256-way head per position. No recurrent loop in training.
- no BatchNorm / dropout: the policy and its frozen reference must give identical log-probs in
  train and eval mode.
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


@dataclass
class SmallPolicyConfig:
    instructions: list[str] = field(default_factory=list)  # the fixed instruction list (ids = order)
    cameras: tuple[str, ...] = ("front", "wrist")  # cameras read, stacked as channels in this order
    image_size: int = 64  # images are resized to this (square) if they differ
    proprio_dim: int = PROPRIO_DIM  # Observation.proprio(): ee xyz, ee quaternion, gripper
    chunk_size: int = 1  # T actions per prediction (T * 7 tokens)
    n_bins: int = 256  # action bins per dimension (token ids 0..n_bins-1)
    channels: tuple[int, ...] = (16, 32, 32)  # conv widths; first two convs have stride 2
    hidden: int = 256  # width of the trunk, token embeddings and head hidden layer
    instruction_dim: int = 16  # instruction embedding width
    camera_fusion: str = "stacked"  # "stacked": cameras as channels of one image (cheapest);
    # "separate": one shared encoder run per camera, keypoints per camera (2x conv cost)
    proprio_mean: list[float] | None = None  # optional proprio standardization (from statistics)
    proprio_std: list[float] | None = None
    # How the ee quaternion (proprio[3:7]) enters the network. "matrix": the 9 rotation-matrix
    # entries, continuous and the same for q and -q. A top-down gripper sits near a 180 degree
    # rotation where qw ~ 0, so the canonical-sign quaternion (qw >= 0) flips between q and -q
    # from step to step and its standardized qz/qw are noise amplified a hundredfold: a BC policy
    # then memorizes episodes from that noise instead of looking at the images. "quaternion": the
    # raw standardized quaternion (checkpoints written before this option; loading one without the
    # key selects it).
    rotation_features: str = "matrix"
    # How predictions become actions (BinTokenHead.predict): "argmax" (the most likely bin, as
    # OpenVLA) or "mean" (per arm dimension the expected value under the predicted distribution;
    # the gripper keeps its argmax; the tokens the policy outputs, and feeds back into its own
    # history, are the argmax tokens either way). With noisy demos the bins of a moving dimension hold a broad
    # mode while hold steps make an exact-zero spike, and argmax picks the spike as soon as the
    # model is unsure: the arm stops. The mean follows the mass.
    decode: str = "argmax"
    # How token ids map to values (apo_ros.actions.bins): "grid" (n_bins values from -1 to 1,
    # every id round-trips) or "openvla" (OpenVLA's edges and centres: the two highest ids share
    # one value; checkpoints written before the option existed load with it).
    bin_layout: str = "grid"

    def __post_init__(self) -> None:
        self.instructions = [str(i) for i in self.instructions]
        self.cameras = tuple(self.cameras)
        if self.bin_layout not in BIN_LAYOUTS:
            raise ValueError(f"bin_layout must be one of {BIN_LAYOUTS}, got {self.bin_layout!r}")
        self.channels = tuple(int(c) for c in self.channels)
        if not self.instructions:
            raise ValueError("the small policy needs a non-empty instruction list (instructions=[...])")
        if len({normalize_instruction(i) for i in self.instructions}) != len(self.instructions):
            raise ValueError(f"instruction list has duplicates: {self.instructions}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.camera_fusion not in ("stacked", "separate"):
            raise ValueError(f"camera_fusion must be 'stacked' or 'separate', got {self.camera_fusion!r}")
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least 2 conv widths, got {self.channels}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.rotation_features not in ("matrix", "quaternion"):
            raise ValueError(f"rotation_features must be 'matrix' or 'quaternion', "
                             f"got {self.rotation_features!r}")
        if self.rotation_features == "matrix" and self.proprio_dim != PROPRIO_DIM:
            raise ValueError(f"rotation_features='matrix' needs the {PROPRIO_DIM}-D Observation.proprio() "
                             f"layout (xyz, quaternion xyzw, gripper), got proprio_dim={self.proprio_dim}")


class SpatialSoftmax(nn.Module):
    """[B, C, H, W] -> [B, 2C]: expected (x, y) in [-1, 1] of each channel's softmax."""

    def __init__(self, height: int, width: int, temperature: float = 1.0):
        super().__init__()
        # learned sharpness: a softmax over near-uniform early features is too flat to learn from
        self.log_scale = nn.Parameter(torch.tensor(-float(np.log(temperature))))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attention = F.softmax(x.reshape(b, c, h * w) * self.log_scale.exp(), dim=-1)
        return (attention @ self.grid).reshape(b, 2 * c)


class SmallPolicy(BinTokenHead, TokenPolicy):
    kind = "small"
    config_class = SmallPolicyConfig

    def __init__(self, config: SmallPolicyConfig, stats: ActionStatistics, device: str | None = None):
        super().__init__(stats)
        self.config = config
        self.cameras = config.cameras
        self.chunk_size = config.chunk_size
        self._instruction_index = {normalize_instruction(s): i for i, s in enumerate(config.instructions)}
        size = config.image_size
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)
        c = config.channels
        self.separate = config.camera_fusion == "separate"
        n_views = len(config.cameras) if self.separate else 1
        in_channels = 3 + 2 if self.separate else 3 * len(config.cameras) + 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c[0], 5, 2, 2), nn.ReLU()]
        layers += [nn.Conv2d(c[0], c[1], 3, 2, 1), nn.ReLU()]
        for a, b in zip(c[1:-1], c[2:]):
            layers += [nn.Conv2d(a, b, 3, 1, 1), nn.ReLU()]
        self.encoder = nn.Sequential(*layers)
        feat = ((size - 1) // 2) // 2 + 1  # after the two stride-2 convs
        self.keypoints = SpatialSoftmax(feat, feat, temperature=0.25)
        h = config.hidden
        # per view: 2C keypoint coordinates + C mean activations
        self.image_proj = nn.Linear(3 * c[-1] * n_views, h)
        self.instruction_embedding = nn.Embedding(len(config.instructions), config.instruction_dim)
        state_dim = config.proprio_dim + (5 if config.rotation_features == "matrix" else 0)  # 4 -> 9
        self.state_proj = nn.Linear(state_dim + config.instruction_dim, h)
        self._build_head(config.chunk_size, config.n_bins, h, config.bin_layout)
        mean = config.proprio_mean or [0.0] * config.proprio_dim
        std = config.proprio_std or [1.0] * config.proprio_dim
        self.register_buffer("proprio_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("proprio_std", torch.tensor(std, dtype=torch.float32).clamp_min(1e-6),
                             persistent=False)
        # The small policy stays float32 on every device: bf16 buys nothing at this size.
        self.to(pick_device(device)[0])

    # ---- config ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = asdict(self.config)
        d["cameras"] = list(d["cameras"])
        d["channels"] = list(d["channels"])
        return d

    @classmethod
    def from_config_dict(cls, d: dict, stats: ActionStatistics, device: str | None = None) -> SmallPolicy:
        known = set(SmallPolicyConfig.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"small policy config has unknown keys {unknown}")
        d = dict(d)
        d.setdefault("rotation_features", "quaternion")  # saved before the option existed
        d.setdefault("bin_layout", "openvla")  # saved before the option existed
        return cls(SmallPolicyConfig(**d), stats, device=device)

    def describe(self) -> dict:
        d = super().describe()
        d.update({"instructions": list(self.config.instructions), "image_size": self.config.image_size,
                  "action_tokenizer": f"bins(n_bins={self.config.n_bins}, {self.config.bin_layout}, "
                                      f"ids 0..{self.config.n_bins - 1})"})
        return d

    # ---- inputs ------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray, proprio: np.ndarray, instructions: Sequence[str],
                object_state: np.ndarray | None = None) -> dict:
        images = np.asarray(images)
        if images.ndim != 5 or images.shape[1] != len(self.cameras) or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, {len(self.cameras)} cameras {list(self.cameras)}, H, W, 3] "
                             f"uint8, got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        b, k, hgt, wid, _ = images.shape
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.shape != (b, self.config.proprio_dim):
            raise ValueError(f"proprio must be [{b}, {self.config.proprio_dim}], got {proprio.shape}")
        if len(instructions) != b:
            raise ValueError(f"{len(instructions)} instructions for a batch of {b}")
        # [B, K, H, W, 3] -> [B, K*3, H, W], still uint8 (cheap to cache); floats made in forward.
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3)))
        x = x.reshape(b, k * 3, hgt, wid)
        size = self.config.image_size
        if (hgt, wid) != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)
        device = self.device
        return {"images": x.to(device), "proprio": torch.from_numpy(proprio).to(device),
                "instruction": self.instruction_ids(instructions).to(device)}

    # ---- model -------------------------------------------------------------------------------
    def trunk(self, inputs: dict) -> torch.Tensor:
        """Observation features [B, hidden]."""
        images = inputs["images"]
        x = images.float() * (2.0 / 255.0) - 1.0
        b = x.shape[0]
        if self.separate:  # [B, K*3, H, W] -> [B*K, 3, H, W]: one encoder pass per camera
            x = x.reshape(b * len(self.cameras), 3, x.shape[2], x.shape[3])
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], 1)
        features = self.encoder(x)
        image = torch.cat([self.keypoints(features), features.mean((2, 3))], 1).reshape(b, -1)
        state = torch.cat([self.proprio_features(inputs["proprio"].float()),
                           self.instruction_embedding(inputs["instruction"])], 1)
        return self.image_proj(image) + self.state_proj(state)

    def proprio_features(self, proprio: torch.Tensor) -> torch.Tensor:
        """[B, 8] proprio -> standardized state features (see SmallPolicyConfig.rotation_features)."""
        standardized = (proprio - self.proprio_mean) / self.proprio_std
        if self.config.rotation_features == "quaternion":
            return standardized
        q = F.normalize(proprio[:, 3:7], dim=1)
        rotation = quaternion_to_matrix(q).reshape(-1, 9)
        return torch.cat([standardized[:, :3], rotation, standardized[:, 7:]], 1)

    def encode_observation(self, inputs: dict) -> torch.Tensor:
        """The trunk [B, hidden]: everything observation-dependent (the image encoder is ~all
        the cost), shared by every token sequence scored on the same observations."""
        return self.trunk(inputs)
