"""The frozen reference's scores for the preference objectives (methods with `needs_reference`).

With `reference: cached` (default) the frozen reference scores every sample once before
training, on UN-AUGMENTED inputs; the policy then sees augmented inputs each step. The reward
r = log pi(aug obs) - log ref(clean obs) then carries an augmentation bias, but z0 is computed
from the same kind of pair (policy on augmented, reference on clean), so the bias cancels to
first order in r - z0; `reference: online` runs the reference every step on the same augmented
inputs (what the released APO code does; slower).

z0's mismatched pairs (`z0_mode: exact`): in cached mode each sample's partner is FIXED, a random
single-cycle permutation of the data set chosen from the seed (sample i's observation scored on
partner(i)'s action), so the reference's mismatched log-probs can be cached too; online mode uses
the batch neighbour i+1 as KTO does. Both estimate the same quantity: log-ratios on unrelated
observation / action pairs. The cache is kept in `<out>/reference_cache.safetensors`, keyed by
the starting policy, the bags, the pairing and the target tokens.

`z0_mode: neighbour_labels` (the released APO code) pairs the same partners but reads the
partner's tokens off sample i's OWN teacher-forced pass (`objectives.neighbour_label_logps`), for
the policy and for the reference: no second scoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import torch

from apo_ros.training.batches import Batches, scores_from_logits
from apo_ros.training.cache import cache_key
from apo_ros.training.config import TrainConfig
from apo_ros.training.objectives import neighbour_label_logps


def _same_width(tok: torch.Tensor, mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The partner's targets cut or padded (masked) to the sample's own width: `targets` trims
    each set of rows to its longest real target."""
    if tok.shape[1] >= width:
        return tok[:, :width], mask[:, :width]
    pad = width - tok.shape[1]
    return torch.nn.functional.pad(tok, (0, pad)), torch.nn.functional.pad(mask, (0, pad))


class ReferenceScores:
    """Reference log-probs of each sample's own targets, and of its mismatched partner's."""

    def __init__(self, reference, batches: Batches, config: TrainConfig, out: str, init_facts: dict,
                 log=print):
        self.reference, self.b, self.out, self.init_facts, self.log = reference, batches, out, init_facts, log
        self.config = config
        own = self.config.method_config
        self.z0_mode = own.z0_pairs()  # None: the method has no z0 (tpo): no mismatched pairs
        self.mode = own.reference  # cached or online
        self.logps_cache: torch.Tensor | None = None  # float [N, L]
        self.kl_cache: torch.Tensor | None = None  # float [N]: summed, on the partner's tokens
        self.partner: np.ndarray | None = None

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"init": self.init_facts, "bags": [cache_key(b) for b in self.b.samples.bags],
                             "z0_mode": self.z0_mode, "seed": self.config.seed,
                             "chunk": self.b.chunk}, sort_keys=True, default=str).encode())
        h.update(self.b.tokens.numpy().tobytes())
        h.update(self.b.token_mask.numpy().tobytes())
        return h.hexdigest()[:24]

    def prepare(self) -> None:
        """Choose the partners and (cached mode) score every sample once."""
        n = len(self.b.samples)
        if self.z0_mode in ("exact", "neighbour_labels") and n > 1:
            # A fixed single-cycle permutation: every sample has a partner other than itself.
            order = np.random.default_rng([self.config.seed, 13]).permutation(n)
            self.partner = np.empty(n, np.int64)
            self.partner[order] = np.roll(order, -1)
        if self.mode != "cached":
            return
        from safetensors.torch import load_file, save_file

        path = os.path.join(self.out, "reference_cache.safetensors")
        key = self.key()
        if os.path.isfile(path):
            try:
                from safetensors import safe_open

                with safe_open(path, "pt") as f:
                    stored = (f.metadata() or {}).get("key")
                if stored == key:
                    cached = load_file(path)
                    self.logps_cache, self.kl_cache = cached["logps"], cached.get("kl")
                    self.log(f"reference log-probs: loaded from {path}")
                    self.reference = None  # not needed any more: free a full-weight copy
                    return
            except Exception as err:  # a damaged cache is recomputed
                self.log(f"reference cache {path} unusable ({err}); recomputing")
        t0 = time.perf_counter()
        logps = torch.zeros(self.b.tokens.shape, dtype=torch.float32)
        kl = torch.zeros(n, dtype=torch.float32) if self.partner is not None else None
        bs = max(1, self.config.reference_batch_size)
        for lo in range(0, n, bs):
            idx = np.arange(lo, min(n, lo + bs))
            inputs = self.b.inputs(idx, None)
            tok, mask = self.b.targets(idx)
            if kl is not None and self.z0_mode == "neighbour_labels":
                ptok, pmask = self.b.targets(self.partner[idx])
                ptok, pmask = _same_width(ptok, pmask, tok.shape[1])
                with self.b.autocast():
                    logits = self.reference.token_logits(inputs, tok, mask).float()
                lp = scores_from_logits(self.reference, logits, tok, mask)[0].cpu()
                logps[lo:lo + len(idx), :lp.shape[1]] = lp
                kl[lo:lo + len(idx)] = neighbour_label_logps(logits, mask, ptok, pmask).cpu()
                continue
            with self.b.autocast():
                lp = self.reference.token_logps(inputs, tok, mask).float().cpu()
            logps[lo:lo + len(idx), :lp.shape[1]] = lp
            if kl is not None:
                ptok, pmask = self.b.targets(self.partner[idx])
                with self.b.autocast():
                    kl_lp = self.reference.token_logps(inputs, ptok, pmask)
                kl[lo:lo + len(idx)] = kl_lp.float().sum(-1).cpu()
        self.logps_cache, self.kl_cache = logps, kl
        self.reference = None  # not needed any more: free a full-weight copy
        self.log(f"reference log-probs: {n} samples in {time.perf_counter() - t0:.1f} s "
                 "(cached for this data set)")
        if self.b.dist.main:
            tensors = {"logps": logps.contiguous()}
            if kl is not None:
                tensors["kl"] = kl
            tmp = path + ".tmp"
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, path)

    def logps(self, idx, inputs, tok, mask) -> torch.Tensor:
        """float [B, L]: the reference's per-token log-probs of rows `idx`'s own targets."""
        if self.logps_cache is not None:
            return self.logps_cache[idx][:, :tok.shape[1]].to(self.b.device)
        with self.b.autocast():
            return self.reference.token_logps(inputs, tok, mask).float()

    def mismatched(self, idx, inputs, tok, mask, logps, ref,
                   encoding=None, logits=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy, reference) summed log-probs [B] of the mismatched pairs (z0's estimate). z0
        is detached, so the policy's pass runs without gradient, on the observation encoding
        already computed for the sample's own tokens. z0_mode "matched": the samples' own sums;
        "neighbour_labels": the partner's tokens read off `logits`, the policy's own pass."""
        policy = self.b.policy
        if self.z0_mode in (None, "matched") or len(idx) < 2:
            return logps.detach().sum(-1), ref.sum(-1)
        if self.z0_mode == "neighbour_labels":
            if logits is None:
                raise ValueError("z0_mode neighbour_labels needs the policy's own-pass logits")
            if self.kl_cache is not None:
                ptok, pmask = self.b.targets(self.partner[idx])
                kl_ref = self.kl_cache[idx].to(self.b.device)
            else:
                ptok, pmask = torch.roll(tok, -1, 0), torch.roll(mask, -1, 0)
                with torch.no_grad(), self.b.autocast():
                    ref_logits = self.reference.token_logits(inputs, tok, mask)
                kl_ref = neighbour_label_logps(ref_logits, mask, ptok, pmask)
            ptok, pmask = _same_width(ptok, pmask, tok.shape[1])
            return neighbour_label_logps(logits.detach(), mask, ptok, pmask), kl_ref
        if self.kl_cache is not None:  # cached: fixed partner per sample
            ptok, pmask = self.b.targets(self.partner[idx])
            kl_ref = self.kl_cache[idx].to(self.b.device)
        else:  # online: batch neighbour i + 1 (mod B), as KTO
            ptok, pmask = torch.roll(tok, -1, 0), torch.roll(mask, -1, 0)
            with self.b.autocast():
                kl_ref = self.reference.token_logps(inputs, ptok, pmask).float().sum(-1)
        with torch.no_grad(), self.b.autocast():
            if encoding is None:
                kl_pol = policy.token_logps(inputs, ptok, pmask).float().sum(-1)
            else:
                kl_pol = policy.token_logps_encoded(encoding, ptok, pmask).float().sum(-1)
        return kl_pol, kl_ref
