"""Step losses: one function per method, from the rows of a step to its loss.

Each takes the run's `Batches`, the rows this process trains on at this step and the step index,
builds the tensors its objective (`objectives.py`) needs and returns a `StepOutput`. The registry
(`registry.py`) names one of these per method.
"""

from __future__ import annotations

import numpy as np
import torch

from apo_ros.training import objectives as O
from apo_ros.training.batches import Batches, StepOutput, logps_and_argmax, scores_from_logits


def bc_step(b: Batches, rows: np.ndarray, step: int, weights: torch.Tensor | None = None) -> StepOutput:
    """Token NLL of the rows' targets (optionally per-sample weighted), or its softened-target
    version with `label_smoothing` / `bin_sigma`."""
    inputs = b.inputs(rows, step)
    tok, mask = b.targets(rows)
    c = b.method_config
    if c.soft_targets():
        with b.autocast():
            logits = b.policy.token_logits(inputs, tok, mask)
        loss = O.smoothed_token_nll(logits, tok, mask, label_smoothing=c.label_smoothing,
                                    bin_sigma=c.bin_sigma, weights=weights)
    else:
        with b.autocast():
            logps = b.policy.token_logps(inputs, tok, mask)
        loss = O.bc_loss(logps.float(), mask, weights)
    return StepOutput(loss, {"loss": float(loss.detach())}, len(rows))


def sirius_step(b: Batches, rows: np.ndarray, step: int) -> StepOutput:
    """bc_step weighted by the Sirius class weights of the training rows (computed once)."""
    if "sirius_weights" not in b.memo:
        s = b.samples
        pool = np.nonzero(~s.dropped & s.trainable_rows())[0]
        w = np.zeros(len(s), np.float32)
        w[pool] = O.sirius_weights([O.SIRIUS_CLASSES[i] for i in s.sirius[pool]])
        b.memo["sirius_weights"] = torch.from_numpy(w)
    return bc_step(b, rows, step, weights=b.memo["sirius_weights"][rows].to(b.device))


def _z0_estimate(b: Batches, kl_pol: torch.Tensor, kl_ref: torch.Tensor) -> torch.Tensor:
    """mean(kl_policy - kl_ref) over the global batch: averaged over processes (equal slices)
    before any clamp, as TRL gathers it."""
    return b.dist.mean((kl_pol - kl_ref).mean().detach())


def _preference_pass(b: Batches, rows: np.ndarray, step: int, want_argmax: bool):
    inputs = b.inputs(rows, step)
    tok, mask = b.targets(rows)
    logits = None
    with b.autocast():
        # one observation encoding for the sample's own tokens and its mismatched partner's
        encoding = b.policy.encode_observation(inputs)
        if b.method_config.z0_pairs() == "neighbour_labels":
            # the partner's labels are read off this same pass (no second scoring)
            logits = b.policy.token_logits_encoded(encoding, tok, mask).float()
            logps, pred = scores_from_logits(b.policy, logits, tok, mask)
            pred_mask = mask
        else:
            logps, pred, pred_mask = logps_and_argmax(b.policy, inputs, tok, mask, want_argmax,
                                                      encoding=encoding)
    logps = logps.float()
    ref = b.reference.logps(rows, inputs, tok, mask)
    kl_pol, kl_ref = b.reference.mismatched(rows, inputs, tok, mask, logps, ref, encoding, logits=logits)
    return tok, mask, logps, ref, kl_pol, kl_ref, pred, pred_mask


def kto_step(b: Batches, rows: np.ndarray, step: int) -> StepOutput:
    c = b.method_config
    _tok, _mask, logps, ref, kl_pol, kl_ref, _, _ = _preference_pass(b, rows, step, False)
    desirable = b.desirable(rows)
    estimate = _z0_estimate(b, kl_pol, kl_ref)
    pol_sum, ref_sum = logps.sum(-1), ref.sum(-1)
    z0_min, z0_max = c.effective_z0_clamp
    loss = O.kto_loss(pol_sum, ref_sum, kl_pol, kl_ref, desirable, beta=c.beta,
                      desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight,
                      kl_estimate=estimate, z0_min=z0_min, z0_max=z0_max)
    terms = O.PreferenceTerms(loss=loss, rewards=(pol_sum - ref_sum).detach(),
                              z0=O.clamp_z0(estimate, z0_min, z0_max),
                              losses=torch.zeros_like(pol_sum),
                              weights=torch.where(desirable, c.desirable_weight, c.undesirable_weight),
                              desirable=desirable)
    return StepOutput(loss, {**terms.metrics(), "z0_unclamped": float(estimate)}, len(rows))


def apo_step(b: Batches, rows: np.ndarray, step: int) -> StepOutput:
    c = b.method_config
    want_argmax = c.reweight
    tok, mask, logps, ref, kl_pol, kl_ref, pred, pred_mask = _preference_pass(b, rows, step, want_argmax)
    errors = ok = None
    if want_argmax:
        errors, ok = b.action_errors(rows, pred, pred_mask)
    estimate = _z0_estimate(b, kl_pol, kl_ref)
    z0_min, z0_max = c.effective_z0_clamp
    terms = O.apo_loss(logps, ref, mask, b.desirable(rows), kl_pol, kl_ref,
                       gripper_mask=b.policy.gripper_positions(tok, mask), action_errors=errors,
                       decode_ok=ok, beta=c.beta, z0_min=z0_min, z0_max=z0_max,
                       mask_gripper=c.mask_gripper, reweight=c.reweight,
                       desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight,
                       reduction=c.apo_reduction, group_size=c.apo_weight_group,
                       weight_norm=c.apo_weight_norm, kl_estimate=estimate)
    return StepOutput(terms.loss, {**terms.metrics(), "z0_unclamped": float(estimate)}, len(rows))


def tpo_step(b: Batches, pair_ids: np.ndarray, step: int) -> StepOutput:
    """Trajectory DPO on window pairs: rejected = the policy steps right before an intervention,
    chosen = the operator's correction that follows (equal length)."""
    if "tpo_windows" not in b.memo:
        b.memo["tpo_windows"] = b.samples.tpo_windows(b.method_config.tpo_window)
    pairs = b.memo["tpo_windows"][pair_ids]
    rej = [np.arange(r, r + n) for r, _, n in pairs]
    cho = [np.arange(c, c + n) for _, c, n in pairs]
    p = len(pairs)
    idx = np.concatenate(cho + rej)
    window = torch.from_numpy(np.concatenate([np.full(len(x), i) for i, x in enumerate(cho + rej)]))
    window = window.to(b.device)
    inputs = b.inputs(idx, step)
    tok, mask = b.targets(idx)
    with b.autocast():
        logps = b.policy.token_logps(inputs, tok, mask).float().sum(-1)
    ref = b.reference.logps(idx, inputs, tok, mask).sum(-1)
    pol_w = O.window_logps(logps, window, 2 * p)
    ref_w = O.window_logps(ref, window, 2 * p)
    terms = O.tpo_loss(pol_w[:p], pol_w[p:], ref_w[:p], ref_w[p:], beta=b.method_config.beta)
    return StepOutput(terms.loss, terms.metrics(), len(idx))


