"""Each loss setting, changed through the config alone, reaches the loss the way its formula says,
on one fixed tiny batch (a real state policy, the real prepare_run and step losses). The adaptive
weights' settings (apo_weight_norm, apo_weight_group): test_training_safeguards.py.

At the first step the policy is its own reference, so every reward r_i is exactly 0 and the
preference losses have closed forms in the settings: with z0 pinned by `z0_clamp: [z, z]`, a
desirable row costs 1 - sigmoid(-beta z) = sigmoid(beta z) and an undesirable one sigmoid(-beta z).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_training_safeguards import _data, _perturb

from apo_ros.training import losses
from apo_ros.training.config import TrainConfig
from apo_ros.training.trainer import prepare_run


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def samples():
    return _data()


def _first_step(tmp_path, samples, step_loss, **options):
    """The first step's output and the batch's desirable mask, the same rows for every setting."""
    base = dict(steps=2, batch_size=16, progress=False, cache_dir=None, threads=1, tensorboard=False,
                policy={"hidden": 16}, augment=False, k=5)
    base.update(options)
    torch.manual_seed(0)
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    run = prepare_run(TrainConfig(**base), samples, "state", str(out))
    rows = run.sampler.next_batch()
    return run, rows, step_loss(run.batches, rows, 0), run.batches.desirable(rows).cpu().numpy()


@pytest.mark.parametrize("method, step_loss", [("apo", losses.apo_step), ("kto", losses.kto_step)])
def test_beta_and_z0_clamp_reach_the_preference_loss_exactly(tmp_path, samples, method, step_loss):
    # only the desirable side weighted (static weights): loss = sum_d sigmoid(beta z) / groups
    # (apo: the sum within micro-groups of 8, averaged over them) or / B (kto: the mean)
    static = {"reweight": False} if method == "apo" else {}
    seen = {}
    for beta, z in ((0.1, 2.0), (0.3, 2.0), (0.1, 6.0)):
        _, rows, out, desirable = _first_step(tmp_path, samples, step_loss, method=method, beta=beta,
                                              z0_clamp=[z, z], undesirable_weight=0.0, **static)
        assert out.metrics["z0"] == pytest.approx(z)
        assert out.metrics["reward_desirable"] == pytest.approx(0.0, abs=1e-5)
        per_row = 1 / math.ceil(len(rows) / 8) if method == "apo" else 1 / len(rows)
        expected = desirable.sum() * _sigmoid(beta * z) * per_row
        assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
        seen[beta, z] = float(out.loss.detach())
    # the directions: a larger beta or a higher reference point makes the desirable rows cost more
    assert seen[0.3, 2.0] > seen[0.1, 2.0]
    assert seen[0.1, 6.0] > seen[0.1, 2.0]


def test_static_weights_scale_their_side_of_the_loss(tmp_path, samples):
    # kto at z0 = 1: desirable rows cost w_D sigmoid(0.1), undesirable ones w_U sigmoid(-0.1)
    def loss(wd, wu):
        _, rows, out, d = _first_step(tmp_path, samples, losses.kto_step, method="kto", z0_clamp=[1, 1],
                                      desirable_weight=wd, undesirable_weight=wu)
        assert 0 < d.sum() < len(rows)
        expected = (wd * d.sum() * _sigmoid(0.1) + wu * (~d).sum() * _sigmoid(-0.1)) / len(rows)
        assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
        return float(out.loss.detach())

    assert loss(2.0, 1.0) > loss(1.0, 1.0) > loss(1.0, 0.5)


def test_label_smoothing_and_bin_sigma_pull_the_bc_loss_towards_the_uniform_one(tmp_path, samples):
    def bc(**options):
        run, rows, _, _ = _first_step(tmp_path, samples, lambda b, r, s: None, method="bc", **options)
        _perturb(run.policy, scale=1.0)  # a confident policy: low NLL on some rows, high on others
        b = run.batches
        with torch.no_grad():
            loss = float(losses.bc_step(b, rows, 0).loss)
            logits = run.policy.token_logits(b.inputs(rows, 0), *b.targets(rows))
        tok, mask = b.targets(rows)
        logp = torch.log_softmax(logits.float(), -1)
        uniform = float(((-(logp.mean(-1)) * mask).sum(-1) / mask.sum(-1)).mean())
        return loss, uniform

    plain, uniform = bc()
    assert abs(plain - uniform) > 0.1
    previous = plain
    for e in (0.1, 0.3, 0.6):  # (1 - e) NLL + e uniform-CE: moves monotonically towards uniform-CE
        smooth, _ = bc(label_smoothing=e)
        assert smooth == pytest.approx((1 - e) * plain + e * uniform, rel=1e-4)
        assert abs(smooth - uniform) < abs(previous - uniform)
        previous = smooth
    # a Gaussian target over neighbouring bins: the expected NLL under it, exactly; a vanishing
    # width is the one-hot target again
    assert bc(bin_sigma=1e-3)[0] == pytest.approx(plain, rel=1e-6)
    for sigma in (0.5, 4.0):
        run, rows, _, _ = _first_step(tmp_path, samples, lambda b, r, s: None, method="bc")
        _perturb(run.policy, scale=1.0)
        b = run.batches
        tok, mask = b.targets(rows)
        with torch.no_grad():
            logp = torch.log_softmax(run.policy.token_logits(b.inputs(rows, 0), tok, mask).float(), -1)
        bins = torch.arange(logp.shape[-1]).float()
        g = torch.exp(-0.5 * ((bins[None, None] - tok[..., None].float()) / sigma) ** 2)
        g = g / g.sum(-1, keepdim=True)
        expected = float(((-(g * logp).sum(-1) * mask).sum(-1) / mask.sum(-1)).mean())
        got = bc(bin_sigma=sigma)[0]
        assert got == pytest.approx(expected, rel=1e-4)
        assert got != pytest.approx(plain, rel=1e-3)
