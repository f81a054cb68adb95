"""`apo-ros bench policy`: inference latency per policy kind and training speed of the small policy.

- latency: one observation -> action chunk (prepare + greedy prediction + decode), batch 1,
  p50 / p99 in milliseconds, on the CPU and on CUDA when present. The VLA kinds run the tiny
  PaliGemma (the code path of a real one; a real 3B backbone is a GPU matter).
- training: samples/s of a full small-policy step (prepare from uint8 arrays, tokenize,
  teacher-forced log-probs, backward, AdamW) at batch 128, 64x64, 2 threads, next to the bare
  baseline: a naive 4-conv encoder with 7 autoregressive 256-way heads.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from apo_ros.policies.factory import POLICY_KINDS, build_policy, policy_kind
from apo_ros.policies.testing import default_statistics, random_batch

INSTRUCTIONS = ["put the lemon on the plate", "hang the cup on the rack"]


def _percentiles(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "n": len(times)}


def _latency(kind: str, device: str, n: int) -> dict:
    policy = build_policy(kind, default_statistics(), instructions=INSTRUCTIONS, device=device,
                          chunk_size=policy_kind(kind).default_chunk_size)
    policy.eval()
    images, proprio, _ = random_batch(1, cameras=len(policy.cameras))
    times = []
    with torch.no_grad():
        for i in range(n + 3):
            t0 = time.perf_counter()
            policy.predict(policy.prepare(images, proprio, INSTRUCTIONS[:1]))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 3:  # warm-up excluded
                times.append(time.perf_counter() - t0)
    out = _percentiles(times)
    out["parameters"] = sum(p.numel() for p in policy.parameters())
    return out


class NaiveBaseline(nn.Module):
    """A naive first CPU policy: 4 convs (32-64-64-64, stride 2) + flatten + 7 AR heads."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(6, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 16, hidden))
        self.proprio = nn.Linear(8, hidden)
        self.token_embedding = nn.Embedding(7 * 256, hidden)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 256))
                                   for _ in range(7))

    def forward(self, images, proprio, tokens):
        h = self.encoder(images.float() / 255.0) + self.proprio(proprio)
        emb = self.token_embedding(tokens + torch.arange(7) * 256)
        history = torch.cumsum(emb, 1) - emb
        return torch.stack([self.heads[d](F.relu(h + history[:, d])) for d in range(7)], 1)


def _train_speed(steps: int, batch: int = 128, threads: int = 2) -> dict:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        images, proprio, actions = random_batch(batch, cameras=2, size=64)
        instructions = [INSTRUCTIONS[i % 2] for i in range(batch)]
        policy = build_policy("small", default_statistics(), instructions=INSTRUCTIONS, device="cpu")
        policy.train()
        opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3)

        def policy_step():
            inputs = policy.prepare(images, proprio, instructions)
            tokens, mask = policy.encode_actions(actions)
            loss = -policy.token_logps(inputs, tokens, mask).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        base = NaiveBaseline()
        base_opt = torch.optim.AdamW(base.parameters(), lr=1e-3)
        base_images = torch.from_numpy(images.transpose(0, 1, 4, 2, 3).reshape(batch, 6, 64, 64).copy())
        base_proprio = torch.from_numpy(proprio)
        base_tokens = torch.randint(0, 256, (batch, 7))

        def baseline_step():
            logits = base(base_images, base_proprio, base_tokens)
            loss = F.cross_entropy(logits.reshape(-1, 256), base_tokens.reshape(-1))
            base_opt.zero_grad()
            loss.backward()
            base_opt.step()

        def rate(step) -> float:
            for _ in range(3):
                step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            return steps * batch / (time.perf_counter() - t0)

        # interleave to share the machine's noise between the two
        small_rates, base_rates = [], []
        for _ in range(2):
            small_rates.append(rate(policy_step))
            base_rates.append(rate(baseline_step))
        small, baseline = max(small_rates), max(base_rates)
        return {"small_samples_per_s": round(small), "naive_baseline_samples_per_s": round(baseline),
                "ratio_to_baseline": round(small / baseline, 2), "batch": batch, "image": "2 x 64x64",
                "threads": threads, "target_samples_per_s": 1000,
                "small_parameters": sum(p.numel() for p in policy.parameters()),
                "baseline_parameters": sum(p.numel() for p in base.parameters())}
    finally:
        torch.set_num_threads(saved)


def run(quick: bool) -> dict:
    n = 20 if quick else 100
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    latency = {}
    saved = torch.get_num_threads()
    # One thread: batch-1 work is too small to gain from a second one, and on a shared 2-core
    # machine thread hand-offs dominate (2 threads measured ~10x slower under load).
    torch.set_num_threads(1)
    try:
        for device in devices:
            for kind in (k.name for k in POLICY_KINDS.values() if k.reads_images):  # same inputs
                latency[f"{kind}@{device}"] = _latency(kind, device, n)
    finally:
        torch.set_num_threads(saved)
    return {"inference_batch1": latency, "inference_threads": 1,
            "note": "vla kinds: tiny PaliGemma; vla_fast chunk 8, untrained (runs to the token cap)",
            "train_small": _train_speed(steps=5 if quick else 20)}
