"""Training objectives: one function per objective, explicit tensors in and out (TRL style).

Nothing here touches a model or a dataset: the trainer computes per-token log-probabilities with
the policy (`TokenPolicy.token_logps`) and the frozen reference, and hands the tensors to these
functions. That keeps every objective checkable by hand (see test/test_training_objectives.py).

Shapes: B = samples in the batch, L = action-token positions (padded; `mask` marks real ones),
P = trajectory pairs (TPO). "logps" are natural-log probabilities. Per-sample "summed" log-probs
are sums over that sample's real token positions (no length normalization, as APO and KTO).

Objectives (the APO paper, its released code, TRL's KTO, Sirius, GRAPE's TPO):
- `bc_loss`: token negative log-likelihood (optionally per-sample weighted: Sirius).
- `smoothed_token_nll`: the same against targets softened over neighbouring bins / uniformly.
- `sirius_weights`: Sirius class weights from the class fractions.
- `kto_loss`: TRL's KTO loss (its semantics, on summed log-probs).
- `apo_loss`: KTO-style loss on summed per-token log-ratios with APO's gripper masking and
  adaptive reweighting; with both switched off and mean reduction it equals `kto_loss`.
- `adaptive_weights`: APO's lambda_D / lambda_U from decoded-action errors.
- `tpo_loss`: trajectory-level DPO (GRAPE's TPO) on window log-probs.
DAgger is `bc_loss` on demos + human-controlled steps (the trainer picks the samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

SIRIUS_CLASSES: tuple[str, ...] = ("demo", "rollout", "intervention", "pre_intervention")
# Sirius target shares (the Sirius paper): interventions get 50% of the weight mass, the 15 steps
# before an intervention ~0, demos keep weight 1, rollouts take what is left.
SIRIUS_INTERVENTION_SHARE = 0.5
SIRIUS_PRE_INTERVENTION_SHARE = 0.002


# ---------------------------------------------------------------------------------------------
# Behaviour cloning (and its per-sample weighted form)
# ---------------------------------------------------------------------------------------------
def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor,
                   exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Sum per-token log-probs over real positions.

    token_logps float [B, L], mask bool [B, L], exclude bool [B, L] or None (positions to leave
    out, e.g. gripper tokens) -> float [B].
    """
    keep = mask if exclude is None else mask & ~exclude
    return torch.where(keep, token_logps, torch.zeros_like(token_logps)).sum(-1)


def bc_loss(token_logps: torch.Tensor, mask: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Token negative log-likelihood.

    token_logps float [B, L] (teacher-forced log pi of the target tokens), mask bool [B, L],
    weights float [B] or None -> scalar.

    Per sample the NLL is averaged over its real tokens (so chunked and single-step policies have
    comparable scales); the batch loss is mean_i w_i * nll_i (w = 1 without weights). With equal
    token counts per sample and no weights this is exactly the usual mean token NLL.
    """
    m = mask.to(token_logps.dtype)
    counts = m.sum(-1).clamp(min=1.0)
    nll = -(token_logps * m).sum(-1) / counts  # [B]
    if weights is not None:
        nll = nll * weights.to(nll.dtype)
    return nll.mean()


def smoothed_token_nll(token_logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *,
                       label_smoothing: float = 0.0, bin_sigma: float = 0.0,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Token cross-entropy against softened targets, for bin tokens (ids 0..V-1 = bins in order).

    token_logits float [B, L, V], tokens long [B, L], mask bool [B, L], weights float [B] or None
    -> scalar, reduced as `bc_loss` (per-sample mean over real tokens, then mean_i w_i nll_i).

    Target distribution at each position: q = (1 - label_smoothing) * g + label_smoothing / V,
    g = one-hot at the target bin when bin_sigma == 0, else a Gaussian over the bins centred on
    it with standard deviation bin_sigma bins (normalized). With a bin width far below the
    demonstrations' noise, a one-hot target asks the policy to tell apart bins the data cannot
    tell apart (it memorizes); the Gaussian says "about here". With both 0 this equals `bc_loss`
    on the log-softmax of the logits.
    """
    logp = torch.log_softmax(token_logits.float(), -1)
    v = logp.shape[-1]
    if bin_sigma > 0:
        bins = torch.arange(v, device=logp.device, dtype=torch.float32)
        distance = bins[None, None, :] - tokens.clamp(0, v - 1)[..., None].float()
        target = torch.exp(-0.5 * (distance / float(bin_sigma)) ** 2)
        target = target / target.sum(-1, keepdim=True)
    else:
        target = F.one_hot(tokens.clamp(0, v - 1), v).float()
    if label_smoothing > 0:
        target = (1 - label_smoothing) * target + label_smoothing / v
    nll_tokens = -(target * logp).sum(-1)  # [B, L]
    m = mask.to(nll_tokens.dtype)
    nll = (nll_tokens * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    if weights is not None:
        nll = nll * weights.to(nll.dtype)
    return nll.mean()


def sirius_weights(classes: Sequence[str] | np.ndarray) -> np.ndarray:
    """Sirius per-sample weights from the class of each sample.

    classes: N entries among `SIRIUS_CLASSES` -> float64 [N].
    With rho_c the fraction of samples in class c:
      w_demo = 1, w_intervention = 0.5 / rho_intv, w_pre = 0.002 / rho_pre,
      w_rollout = (1 - 0.5 - rho_demo - 0.002) / rho_rollout.
    So sum_i w_i / N = rho_demo + 0.5 + 0.002 + (1 - 0.5 - rho_demo - 0.002) = 1: each class
    gets its share of the weight mass. Edge cases: a class with no samples simply contributes
    nothing (its share is not redistributed); the rollout weight is clipped at 0 when demos
    already hold more than 49.8% of the samples (a negative weight would push likelihood down).
    """
    cls = np.asarray(classes).astype(str)
    unknown = sorted(set(cls.tolist()) - set(SIRIUS_CLASSES))
    if unknown:
        raise ValueError(f"unknown Sirius classes {unknown}; expected {list(SIRIUS_CLASSES)}")
    n = len(cls)
    weights = np.zeros(n, dtype=np.float64)
    if n == 0:
        return weights
    rho = {c: float(np.mean(cls == c)) for c in SIRIUS_CLASSES}
    weights[cls == "demo"] = 1.0
    if rho["intervention"] > 0:
        weights[cls == "intervention"] = SIRIUS_INTERVENTION_SHARE / rho["intervention"]
    if rho["pre_intervention"] > 0:
        weights[cls == "pre_intervention"] = SIRIUS_PRE_INTERVENTION_SHARE / rho["pre_intervention"]
    if rho["rollout"] > 0:
        left = 1.0 - SIRIUS_INTERVENTION_SHARE - rho["demo"] - SIRIUS_PRE_INTERVENTION_SHARE
        weights[cls == "rollout"] = max(left, 0.0) / rho["rollout"]
    return weights


# ---------------------------------------------------------------------------------------------
# KTO (TRL semantics)
# ---------------------------------------------------------------------------------------------
def clamp_z0(estimate: torch.Tensor, z0_min: float | None, z0_max: float | None) -> torch.Tensor:
    """The reference point: the KL estimate clamped to [z0_min, z0_max] (None = unbounded on
    that side), detached. TRL clamps at >= 0 only; the released APO code to [-5, 5], which keeps
    a z0 that climbs on conflicting targets (17-48 nats measured here unclamped above) from
    turning every desirable sample's loss into ~1."""
    if z0_min is not None or z0_max is not None:
        estimate = estimate.clamp(min=z0_min, max=z0_max)
    return estimate.detach()


def neighbour_label_logps(token_logits: torch.Tensor, mask: torch.Tensor,
                          partner_tokens: torch.Tensor, partner_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the partner's action tokens read off sample i's OWN teacher-forced
    logits (the released APO code's mismatched pairs: no second forward pass).

    token_logits float [B, L, V] (sample i's pass on its own tokens), mask bool [B, L],
    partner_tokens long [B, L], partner_mask bool [B, L] -> float [B]: sum over positions real in
    both of log_softmax(logits_i)[t, partner_token_t]. It differs from scoring the partner's
    tokens as a sequence (z0_mode exact) in what the later positions are conditioned on: sample
    i's own earlier tokens rather than the partner's.
    """
    logp = torch.log_softmax(token_logits.float(), -1)
    picked = logp.gather(-1, partner_tokens.clamp(0, logp.shape[-1] - 1)[..., None]).squeeze(-1)
    keep = mask & partner_mask
    return torch.where(keep, picked, torch.zeros_like(picked)).sum(-1)


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, kl_policy_logps: torch.Tensor,
             kl_ref_logps: torch.Tensor, desirable: torch.Tensor, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             kl_estimate: torch.Tensor | None = None, z0_min: float | None = 0.0,
             z0_max: float | None = None) -> torch.Tensor:
    """TRL's KTO loss.

    policy_logps, ref_logps: float [B] summed log-probs of each sample's own action tokens under
    the policy / the reference; kl_policy_logps, kl_ref_logps: float [B] the same for the
    mismatched pairs (sample i's observation, sample i+1's action); desirable bool [B].

    z0 = clamp(mean(kl_policy - kl_ref), z0_min, z0_max), detached (TRL: min 0, no max; None =
    unbounded on that side); r = policy - ref;
    desirable: w_D * (1 - sigmoid(beta (r - z0))); undesirable: w_U * (1 - sigmoid(beta (z0 - r)));
    loss = mean over all B samples -> scalar. kl_estimate: the unclamped mean(kl_policy - kl_ref)
    over a larger batch (TRL averages it over every process before clamping); None = this batch's.
    """
    if kl_estimate is None:
        kl_estimate = (kl_policy_logps - kl_ref_logps).mean()
    z0 = clamp_z0(kl_estimate, z0_min, z0_max)
    rewards = policy_logps - ref_logps
    desirable = desirable.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (rewards - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rewards))),
    )
    return losses.mean()


# ---------------------------------------------------------------------------------------------
# APO
# ---------------------------------------------------------------------------------------------
@dataclass
class PreferenceTerms:
    """Everything an objective computed, for logging and tests (all but `loss` detached)."""

    loss: torch.Tensor  # scalar, differentiable
    rewards: torch.Tensor  # [B] r_i = summed log-ratio used in the loss
    z0: torch.Tensor  # scalar reference point
    losses: torch.Tensor  # [B] per-sample unweighted losses
    weights: torch.Tensor  # [B] lambda_i applied
    desirable: torch.Tensor  # [B] bool
    extra: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        d = self.desirable
        out = {"loss": float(self.loss.detach()), "z0": float(self.z0)}
        if d.any():
            out["reward_desirable"] = float(self.rewards[d].mean())
            out["weight_desirable"] = float(self.weights[d].mean())
        if (~d).any():
            out["reward_undesirable"] = float(self.rewards[~d].mean())
            out["weight_undesirable"] = float(self.weights[~d].mean())
        if d.any() and (~d).any():
            out["reward_margin"] = out["reward_desirable"] - out["reward_undesirable"]
        out.update({k: float(v) for k, v in self.extra.items()})
        return out


# The paper's (and its released code's) per-device batch: the adaptive weights' group sums and
# the "sum" reduction run over micro-groups of this many consecutive batch rows (see
# adaptive_weights), so their balance does not depend on the batch size.
APO_WEIGHT_GROUP = 8


def micro_groups(batch: int, group_size: int | None, device=None) -> torch.Tensor:
    """long [B]: the micro-group of each batch row (consecutive rows, `group_size` per group; the
    last group may be smaller). group_size None or 0: one group (the whole batch)."""
    if not group_size:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return torch.arange(batch, device=device) // int(group_size)


WEIGHT_NORMS = ("sum", "mean")


def adaptive_weights(errors: torch.Tensor, desirable: torch.Tensor,
                     decode_ok: torch.Tensor | None = None, eps: float = 1e-4,
                     group_size: int | None = APO_WEIGHT_GROUP, norm: str = "sum") -> torch.Tensor:
    """APO's adaptive weights.

    errors float [B]: l_i = mean over action dims |decoded argmax action - target| (normalized
    actions); desirable bool [B]; decode_ok bool [B] or None -> lambda float [B], detached.

    Within each group g (desirable / undesirable) of each micro-group m:
    w_i = (l_i + eps) / (sum_{j in g and m} l_j + eps); lambda_D = 1 - exp(-w), lambda_U = exp(-w).
    A sample whose decode failed gets lambda 1 and its error does not enter the group sums.

    Why micro-groups: w_i is about 1 / (members of its group), so over a whole batch of 64 the
    desirable lambda falls to ~0.02 and the undesirable one rises to ~0.94 and APO turns into
    "push the undesirable samples down". The paper's formula runs per device on 8 samples (the
    released code's per-device batch), where lambda_D ~ 0.15-0.25 and lambda_U ~ 0.6-0.8.
    Computing it over consecutive micro-groups of `group_size` (default 8) rows keeps that
    balance whatever the batch size: the weights of a batch of 64 are exactly those of eight
    batches of 8 (tested). group_size None / 0 = the whole batch (the formula taken literally).

    norm "mean" divides by the group's mean error instead of its sum: w_i = (l_i + eps) /
    (mean_{j in g and m} l_j + eps), so the average w is 1 whatever the group's size: lambda_D
    ~ 0.6 and lambda_U ~ 0.4 for evenly spread errors (about 0.45 each for the skewed errors
    of the study's runs), so the desirable side is no longer outweighed, while the ranking
    within a group - the adaptive part - is the paper's. With per-device groups of 8 the sum
    form leaves the undesirable side dominant (about 0.15 x 6 desirable against 0.65 x 2
    undesirable per group).
    """
    if norm not in WEIGHT_NORMS:
        raise ValueError(f"norm must be one of {WEIGHT_NORMS}, got {norm!r}")
    errors = errors.detach().to(torch.float32)
    desirable = desirable.bool()
    ok = torch.ones_like(desirable) if decode_ok is None else decode_ok.bool()
    groups = micro_groups(errors.shape[0], group_size, errors.device)
    n_groups = int(groups.max()) + 1 if groups.numel() else 0
    lam = torch.ones_like(errors)
    for group, is_desirable in ((desirable, True), (~desirable, False)):
        members = group & ok
        if not members.any():
            continue
        sums = torch.zeros(n_groups, dtype=errors.dtype, device=errors.device)
        sums = sums.index_add(0, groups, torch.where(members, errors, torch.zeros_like(errors)))
        if norm == "mean":
            counts = torch.zeros(n_groups, dtype=errors.dtype, device=errors.device)
            counts = counts.index_add(0, groups, members.to(errors.dtype))
            sums = sums / counts.clamp(min=1)
        w = (errors + eps) / (sums[groups] + eps)
        value = 1 - torch.exp(-w) if is_desirable else torch.exp(-w)
        lam = torch.where(members, value, lam)
    return lam


def apo_loss(policy_token_logps: torch.Tensor, ref_token_logps: torch.Tensor, mask: torch.Tensor,
             desirable: torch.Tensor, kl_policy_logps: torch.Tensor, kl_ref_logps: torch.Tensor,
             *, gripper_mask: torch.Tensor | None = None, action_errors: torch.Tensor | None = None,
             decode_ok: torch.Tensor | None = None, beta: float = 0.1, z0_min: float | None = 0.0,
             z0_max: float | None = None, mask_gripper: bool = True, reweight: bool = True,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             reduction: str = "sum", group_size: int | None = APO_WEIGHT_GROUP,
             weight_norm: str = "sum", kl_estimate: torch.Tensor | None = None) -> PreferenceTerms:
    """APO loss (the paper's objective, with the released code's options).

    policy_token_logps, ref_token_logps: float [B, L] per-token log-probs of each sample's own
    action tokens (0 where ~mask); mask bool [B, L]; desirable bool [B];
    kl_policy_logps, kl_ref_logps: float [B] summed log-probs of the mismatched pairs (exact: i's
    observation with i+1's tokens; cheap approximation: pass the per-sample sums of the matched
    pass); gripper_mask bool [B, L] (positions holding the gripper token);
    kl_estimate: the unclamped z0 estimate over a larger batch (averaged across processes, as
    TRL does) or None for this batch's mean(kl_policy - kl_ref);
    action_errors float [B], decode_ok bool [B] (for reweighting).

    r_i = sum over real tokens of (policy - ref), leaving out gripper positions of undesirable
    samples when `mask_gripper`; z0 = clamp(mean(kl_policy - kl_ref), z0_min, z0_max), detached;
    L_i = 1 - sigmoid(beta (r - z0)) (desirable) or 1 - sigmoid(beta (z0 - r)) (undesirable);
    lambda_i = adaptive weights when `reweight` (needs action_errors) else the static
    desirable/undesirable weights, over micro-groups of `group_size` rows, normalized by the
    group's error sum or mean (`weight_norm`; see adaptive_weights);
    loss = "sum" (the paper's total): the sum of lambda_i L_i within each micro-group, averaged
    over the micro-groups - what data-parallel training on devices of `group_size` samples
    computes, so the scale does not grow with the batch (group_size None / 0: the sum over the
    whole batch); "mean" (KTO's reduction): mean_i lambda_i L_i.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    desirable = desirable.bool()
    exclude = None
    if mask_gripper and gripper_mask is not None:
        exclude = gripper_mask.bool() & ~desirable[:, None]
    # Sum of per-token log-ratios, written as a difference of sums so that with the options off
    # the floating-point result is bit-identical to kto_loss on summed log-probs.
    rewards = (sequence_logps(policy_token_logps, mask, exclude)
               - sequence_logps(ref_token_logps, mask, exclude))
    z0 = (kl_policy_logps - kl_ref_logps).mean() if kl_estimate is None else kl_estimate
    z0 = clamp_z0(z0, z0_min, z0_max)
    losses = torch.where(desirable, 1 - torch.sigmoid(beta * (rewards - z0)),
                         1 - torch.sigmoid(beta * (z0 - rewards)))
    if reweight:
        if action_errors is None:
            raise ValueError("apo_loss(reweight=True) needs action_errors")
        weights = adaptive_weights(action_errors, desirable, decode_ok, group_size=group_size,
                                   norm=weight_norm)
        weights = weights.to(losses.dtype)
    else:
        weights = torch.where(desirable, torch.full_like(losses, desirable_weight),
                              torch.full_like(losses, undesirable_weight))
    weighted = weights * losses
    if reduction == "sum":
        n_groups = int(micro_groups(losses.shape[0], group_size).max()) + 1 if losses.numel() else 1
        loss = weighted.sum() / n_groups
    else:
        loss = weighted.mean()
    return PreferenceTerms(loss=loss, rewards=rewards.detach(), z0=z0, losses=losses.detach(),
                           weights=weights.detach(), desirable=desirable)


def decoded_action_errors(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """l_i = mean over action dims (and chunk steps) |predicted - target|.

    predicted, target: normalized actions float [B, T, 7] (or [B, 7]) -> float [B].
    """
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"decoded actions {p.shape} and targets {t.shape} differ in shape")
    return np.abs(p - t).reshape(p.shape[0], -1).mean(-1)


# ---------------------------------------------------------------------------------------------
# TPO (GRAPE): trajectory-level DPO
# ---------------------------------------------------------------------------------------------
def window_logps(step_logps: torch.Tensor, window_index: torch.Tensor, n_windows: int) -> torch.Tensor:
    """log pi(trajectory window) = sum of its steps' summed action-token log-probs.

    step_logps float [S] (one per step sample), window_index long [S] in [0, n_windows) ->
    float [n_windows].
    """
    out = torch.zeros(n_windows, dtype=step_logps.dtype, device=step_logps.device)
    return out.index_add(0, window_index, step_logps)


def tpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float = 0.1) -> PreferenceTerms:
    """Trajectory-level DPO.

    All inputs float [P]: log pi(window) of the chosen (human correction) and rejected
    (pre-intervention policy) window of each pair, under the policy and the reference.
    loss = mean_p -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]).
    """
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen - rejected))
    p = chosen.shape[0]
    desirable = torch.cat([torch.ones(p, dtype=torch.bool), torch.zeros(p, dtype=torch.bool)])
    rewards = torch.cat([chosen, rejected]).detach()
    return PreferenceTerms(
        loss=losses.mean(), rewards=rewards, z0=torch.zeros(()), losses=losses.detach(),
        weights=torch.ones(2 * p), desirable=desirable.to(rewards.device),
        extra={"pair_accuracy": float((chosen > rejected).float().mean())})
