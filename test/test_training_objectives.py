"""Objectives against hand computations (each loss recomputed step by step from its definition)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apo_ros.training.objectives import (
    adaptive_weights,
    apo_loss,
    bc_loss,
    decoded_action_errors,
    kto_loss,
    sirius_weights,
    smoothed_token_nll,
    tpo_loss,
    window_logps,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_kto_loss_matches_hand_computation():
    pol = torch.tensor([-3.0, -5.0, -2.0], dtype=torch.float64)
    ref = torch.tensor([-4.0, -4.5, -2.5], dtype=torch.float64)
    kl_pol = torch.tensor([-6.0, -7.0, -5.0], dtype=torch.float64)
    kl_ref = torch.tensor([-7.0, -7.5, -4.0], dtype=torch.float64)
    desirable = torch.tensor([True, False, True])
    beta, wd, wu = 0.1, 1.5, 0.7
    loss = kto_loss(pol, ref, kl_pol, kl_ref, desirable, beta=beta, desirable_weight=wd,
                    undesirable_weight=wu)
    z0 = max(((-6 + 7) + (-7 + 7.5) + (-5 + 4)) / 3, 0.0)  # = 1/6
    r = [1.0, -0.5, 0.5]
    expected = (wd * (1 - _sig(beta * (r[0] - z0))) + wu * (1 - _sig(beta * (z0 - r[1])))
                + wd * (1 - _sig(beta * (r[2] - z0)))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_kto_z0_clamped_at_zero_and_detached():
    pol = torch.tensor([-1.0, -1.0], requires_grad=True)
    kl_pol = torch.tensor([-9.0, -9.0], requires_grad=True)  # mean log-ratio -8 -> z0 = 0
    loss = kto_loss(pol, torch.tensor([-1.0, -1.0]), kl_pol, torch.tensor([-1.0, -1.0]),
                    torch.tensor([True, False]))
    # r = 0, z0 = 0: both losses 1 - sigmoid(0) = 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert kl_pol.grad is None or torch.all(kl_pol.grad == 0)


GRIP = 4


def _random_batch(b=6, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    pol = -torch.rand(b, length, generator=g, dtype=torch.float64) * 3
    ref = -torch.rand(b, length, generator=g, dtype=torch.float64) * 3
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, -2:] = False
    pol, ref = pol * mask, ref * mask
    kl_pol = -torch.rand(b, generator=g, dtype=torch.float64) * 10
    kl_ref = kl_pol - torch.rand(b, generator=g, dtype=torch.float64)
    desirable = torch.tensor([True, False, True, True, False, False])[:b]
    gripper = torch.zeros(b, length, dtype=torch.bool)
    gripper[:, GRIP] = True  # before sample 0's padding
    return pol, ref, mask, kl_pol, kl_ref, desirable, gripper


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.33, 0.8)])
def test_apo_reduces_to_kto_exactly(weights):
    pol, ref, mask, kl_pol, kl_ref, desirable, gripper = _random_batch()
    wd, wu = weights
    terms = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper,
                     mask_gripper=False, reweight=False, reduction="mean", z0_min=0.0, z0_max=None,
                     desirable_weight=wd, undesirable_weight=wu)
    kto = kto_loss(pol.sum(-1), ref.sum(-1), kl_pol, kl_ref, desirable,
                   desirable_weight=wd, undesirable_weight=wu)
    assert torch.equal(terms.loss, kto)


def test_apo_z0_clamp_range():
    pol, ref, mask, kl_pol, kl_ref, desirable, gripper = _random_batch()
    kl_pol = kl_ref + 20.0  # mean log-ratio 20
    t = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, reweight=False, z0_min=-5.0, z0_max=5.0)
    assert t.z0.item() == 5.0
    t = apo_loss(pol, ref, mask, desirable, kl_ref - 20.0, kl_ref, reweight=False, z0_min=-5.0, z0_max=5.0)
    assert t.z0.item() == -5.0
    t = apo_loss(pol, ref, mask, desirable, kl_ref - 20.0, kl_ref, reweight=False)
    assert t.z0.item() == 0.0


def test_gradient_signs_and_gripper_masking():
    pol, ref, mask, kl_pol, kl_ref, desirable, gripper = _random_batch()
    pol = pol.clone().requires_grad_(True)
    errors = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.4, 0.0], dtype=torch.float64)
    terms = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper,
                     action_errors=errors)
    terms.loss.backward()
    g = pol.grad
    real = mask & ~(gripper & ~desirable[:, None])
    # Gradient descent moves logps by -grad: desirable up (grad < 0), undesirable down (grad > 0).
    assert torch.all(g[desirable][real[desirable]] < 0)
    assert torch.all(g[~desirable][real[~desirable]] > 0)
    # The gripper token of an undesirable sample gets exactly zero gradient when masked...
    assert torch.all(g[~desirable][:, GRIP] == 0)
    # ... but not a desirable one's, and padding never.
    assert torch.all(g[desirable][:, GRIP] < 0)
    assert torch.all(g[~mask] == 0)
    # Switched off, the undesirable gripper token is pushed down like the rest.
    pol.grad = None
    apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper, action_errors=errors,
             mask_gripper=False).loss.backward()
    assert torch.all(pol.grad[~desirable][:, GRIP] > 0)


def test_gripper_masking_changes_reward_only_of_undesirable():
    pol, ref, mask, kl_pol, kl_ref, desirable, gripper = _random_batch()
    on = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper, reweight=False)
    off = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper, reweight=False,
                   mask_gripper=False)
    diff = (pol - ref)[:, GRIP]
    assert torch.allclose(on.rewards[desirable], off.rewards[desirable])
    assert torch.allclose(on.rewards[~desirable], off.rewards[~desirable] - diff[~desirable])


def test_adaptive_weights_hand_example():
    errors = torch.tensor([0.1, 0.3, 0.2, 0.6, 0.5])
    desirable = torch.tensor([True, True, False, False, False])
    ok = torch.tensor([True, True, True, True, False])
    lam = adaptive_weights(errors, desirable, ok)
    eps = 1e-4
    wd = [(0.1 + eps) / (0.4 + eps), (0.3 + eps) / (0.4 + eps)]
    wu = [(0.2 + eps) / (0.8 + eps), (0.6 + eps) / (0.8 + eps)]
    expected = [1 - math.exp(-wd[0]), 1 - math.exp(-wd[1]), math.exp(-wu[0]), math.exp(-wu[1]), 1.0]
    assert lam.tolist() == pytest.approx(expected, rel=1e-6)
    # The desirable sample the policy gets more wrong weighs more; the undesirable one it still
    # imitates (small error) weighs more.
    assert lam[1] > lam[0] and lam[2] > lam[3]


def test_adaptive_weights_normalized_by_the_group_mean():
    errors = torch.tensor([0.1, 0.3, 0.2, 0.6, 0.5])
    desirable = torch.tensor([True, True, False, False, False])
    ok = torch.tensor([True, True, True, True, False])
    lam = adaptive_weights(errors, desirable, ok, norm="mean")
    eps = 1e-4
    wd = [(0.1 + eps) / (0.2 + eps), (0.3 + eps) / (0.2 + eps)]
    wu = [(0.2 + eps) / (0.4 + eps), (0.6 + eps) / (0.4 + eps)]
    expected = [1 - math.exp(-wd[0]), 1 - math.exp(-wd[1]), math.exp(-wu[0]), math.exp(-wu[1]), 1.0]
    assert lam.tolist() == pytest.approx(expected, rel=1e-6)
    # the same ranking as the sum form; the average w is 1 whatever the group size, so the
    # desirable side weighs more than the undesirable one (the sum form: the other way round)
    gen = torch.Generator().manual_seed(1)
    errors, desirable = torch.rand(64, generator=gen), torch.rand(64, generator=gen) < 0.75
    for group in (8, 0):
        mean_form = adaptive_weights(errors, desirable, group_size=group, norm="mean")
        assert 0.5 < float(mean_form[desirable].mean()) < 0.7
        assert 0.3 < float(mean_form[~desirable].mean()) < 0.45
    assert torch.equal(adaptive_weights(errors, desirable, norm="mean"),
                       torch.cat([adaptive_weights(errors[i:i + 8], desirable[i:i + 8], group_size=None,
                                                   norm="mean") for i in range(0, 64, 8)]))
    sum_form = adaptive_weights(errors, desirable)
    assert float(sum_form[desirable].mean()) < float(sum_form[~desirable].mean())
    with pytest.raises(ValueError, match="norm"):
        adaptive_weights(errors, desirable, norm="median")


def test_apo_total_is_weighted_sum():
    pol, ref, mask, kl_pol, kl_ref, desirable, gripper = _random_batch()
    errors = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.4, 0.0], dtype=torch.float64)
    t = apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=gripper, action_errors=errors)
    lam = adaptive_weights(errors, desirable).to(torch.float64)
    assert t.loss.item() == pytest.approx(float((lam * t.losses).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="action_errors"):
        apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref)


def test_decoded_action_errors():
    p = np.zeros((2, 1, 7))
    t = np.ones((2, 1, 7))
    t[1] = 0.5
    assert decoded_action_errors(p, t).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError):
        decoded_action_errors(p, t[:, 0])


def test_bc_loss_token_nll_and_weights():
    logps = torch.log(torch.tensor([[0.5, 0.25, 1.0], [0.5, 0.5, 0.5]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    nll0 = -(math.log(0.5) + math.log(0.25)) / 2
    nll1 = -math.log(0.5)
    assert bc_loss(logps, mask).item() == pytest.approx((nll0 + nll1) / 2, rel=1e-6)
    w = torch.tensor([2.0, 0.0])
    assert bc_loss(logps, mask, w).item() == pytest.approx(nll0, rel=1e-6)


def test_sirius_weights_sum_as_specified():
    classes = ["demo"] * 20 + ["rollout"] * 50 + ["intervention"] * 20 + ["pre_intervention"] * 10
    w = sirius_weights(classes)
    n = len(classes)
    assert w[:20].tolist() == [1.0] * 20
    assert w[20] == pytest.approx((1 - 0.5 - 0.2 - 0.002) / 0.5)
    assert w[70] == pytest.approx(0.5 / 0.2)
    assert w[90] == pytest.approx(0.002 / 0.1)
    # class shares of the weight mass
    assert w[70:90].sum() / n == pytest.approx(0.5)
    assert w[90:].sum() / n == pytest.approx(0.002)
    assert w.sum() / n == pytest.approx(1.0)
    # demos over half the data: rollouts clipped at zero, never negative
    w = sirius_weights(["demo"] * 8 + ["rollout", "intervention"])
    assert w[8] == 0.0 and (w >= 0).all()
    with pytest.raises(ValueError, match="unknown"):
        sirius_weights(["demo", "bogus"])


def test_tpo_loss_hand_and_window_sums():
    step = torch.tensor([-1.0, -2.0, -3.0, -4.0, -0.5])
    idx = torch.tensor([0, 0, 1, 1, 1])
    assert window_logps(step, idx, 2).tolist() == [-3.0, -7.5]
    pc, pr = torch.tensor([-3.0]), torch.tensor([-7.5])
    rc, rr = torch.tensor([-4.0]), torch.tensor([-7.0])
    t = tpo_loss(pc, pr, rc, rr, beta=0.1)
    margin = ((-3.0 + 4.0) - (-7.5 + 7.0)) * 0.1
    assert t.loss.item() == pytest.approx(-math.log(_sig(margin)), rel=1e-6)
    assert t.metrics()["pair_accuracy"] == 1.0


def test_apo_weights_at_batch_64_equal_those_of_eight_batches_of_8():
    """The reference grouping is the paper's per-device batch of 8: a batch of 64 must weigh each
    sample exactly as eight separate batches of 8 would, and the "sum" loss must be their mean."""
    gen = torch.Generator().manual_seed(0)
    errors = torch.rand(64, generator=gen)
    desirable = torch.rand(64, generator=gen) < 0.6
    ok = torch.rand(64, generator=gen) < 0.95
    lam = adaptive_weights(errors, desirable, ok)  # default group of 8
    expected = torch.cat([adaptive_weights(errors[i:i + 8], desirable[i:i + 8], ok[i:i + 8], group_size=None)
                          for i in range(0, 64, 8)])
    assert torch.equal(lam, expected)
    # the balance does not drift with the batch size (the whole-batch formula does)
    whole = adaptive_weights(errors, desirable, ok, group_size=None)
    assert lam[desirable & ok].mean() > 4 * whole[desirable & ok].mean()
    assert 0.1 < float(lam[desirable & ok].mean()) < 0.4 and 0.5 < float(lam[~desirable & ok].mean()) < 0.9
    # the summed loss of the 64 = the mean over the eight micro-batches of their sums
    pol, ref = torch.randn(64, 7, generator=gen, dtype=torch.float64), torch.randn(64, 7, generator=gen,
                                                                              dtype=torch.float64)
    mask = torch.ones(64, 7, dtype=torch.bool)
    kl = torch.randn(64, generator=gen, dtype=torch.float64)
    big = apo_loss(pol, ref, mask, desirable, kl, kl * 0, action_errors=errors, decode_ok=ok, z0_min=None)
    # z0 is a batch statistic: give each micro-batch the big batch's z0 to compare the rest
    parts = [apo_loss(pol[i:i + 8], ref[i:i + 8], mask[i:i + 8], desirable[i:i + 8], kl * 0 + big.z0,
                      kl * 0, action_errors=errors[i:i + 8], decode_ok=ok[i:i + 8], z0_min=None,
                      group_size=None)
             for i in range(0, 64, 8)]
    for part in parts:
        assert part.z0 == big.z0
    assert big.loss.item() == pytest.approx(sum(p.loss.item() for p in parts) / 8, rel=1e-12)


def test_smoothed_token_nll():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, 16, generator=gen)
    tokens = torch.randint(0, 16, (3, 7), generator=gen)
    mask = torch.rand(3, 7, generator=gen) < 0.8
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    # no smoothing = the plain token NLL
    plain = bc_loss(logp, mask).item()
    assert smoothed_token_nll(logits, tokens, mask).item() == pytest.approx(plain, rel=1e-6)
    # uniform smoothing: (1 - e) NLL + e * mean over bins of -log p
    e = 0.1
    uniform = -torch.log_softmax(logits, -1).mean(-1)
    nll = -logp
    by_hand = ((1 - e) * nll + e * uniform) * mask
    expected = (by_hand.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    smoothed = smoothed_token_nll(logits, tokens, mask, label_smoothing=e).item()
    assert smoothed == pytest.approx(expected.item(), rel=1e-6)
    # Gaussian over neighbouring bins: a prediction one bin off costs less than one far off
    target = torch.full((1, 1), 8)
    one = torch.ones(1, 1, dtype=torch.bool)
    near = torch.full((1, 1, 16), -10.0)
    near[0, 0, 9] = 10.0
    far = torch.full((1, 1, 16), -10.0)
    far[0, 0, 14] = 10.0
    for sigma in (1.0, 2.0):
        assert smoothed_token_nll(near, target, one, bin_sigma=sigma) < smoothed_token_nll(far, target, one,
                                                                                           bin_sigma=sigma)
    assert smoothed_token_nll(near, target, one).item() == pytest.approx(
        smoothed_token_nll(far, target, one).item(), rel=1e-5)  # one-hot: all misses cost the same
