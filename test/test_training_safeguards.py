"""The released APO code's safeguards as settings (z0 clamp, no-op filter, neighbour-label
mismatched pairs), the paper's demo mix, and the older loss settings: each one, changed alone
with the same seed, moves the loss or the batches the way it should."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.recording.episode import Episode, Step
from apo_ros.recording.labels import label_sources, noop_units
from apo_ros.recording.synthetic import synthetic_observation
from apo_ros.training import losses
from apo_ros.training import objectives as O
from apo_ros.training.cache import episode_columns
from apo_ros.training.config import TrainConfig
from apo_ros.training.samples import assemble_samples
from apo_ros.training.trainer import demo_mix_episodes, prepare_run

MOVE = np.array([0.02, -0.01, 0.015, 0.05, -0.04, 0.03, 1.0])
STILL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def _episode(sources, seed, path, actions=None):
    rng = np.random.default_rng(seed)
    steps = []
    for i, src in enumerate(sources):
        obs = synthetic_observation(rng, 1000 + i, size=8, index=i)
        action = MOVE * rng.uniform(0.5, 1.5, 7) if actions is None else actions[i]
        action = np.asarray(action, dtype=np.float64).copy()
        action[6] = 1.0 if actions is None and i % 7 else action[6]
        steps.append(Step(observation=obs, action=action, source=src, stamp_ns=1000 + i))
    return Episode(path=path, steps=steps)


def _samples(episodes, n_demos):
    parts = [(episode_columns(ep), i < n_demos) for i, ep in enumerate(episodes)]
    return assemble_samples(parts, [ep.path for ep in episodes])


def _data(interaction_actions=None):
    demos = [_episode(["expert"] * 20, i, f"demo{i}") for i in range(6)]
    runs = [_episode(["policy"] * 24 + ["human"] * 4 + ["policy"] * 4, 50 + i, f"run{i}",
                     interaction_actions) for i in range(3)]
    quiet = [_episode(["policy"] * 12, 90, "quiet")]  # a deployment nobody corrected
    return _samples(demos + runs + quiet, len(demos))


def _run(tmp_path, name, samples=None, **options):
    base = dict(steps=2, batch_size=16, progress=False, cache_dir=None, threads=1, tensorboard=False,
                policy={"hidden": 16}, augment=False, k=5)
    base.update(options)
    torch.manual_seed(0)
    out = tmp_path / name
    out.mkdir()
    return prepare_run(TrainConfig(**base), samples or _data(), "state", str(out))


def _perturb(policy, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------------------------------------
# z0 clamp
# ---------------------------------------------------------------------------------------------
def test_z0_clamp_caps_a_climbing_reference_point_in_the_objective():
    # one desirable and one undesirable sample, rewards 8 and 2; the mismatched pairs say z0 = 12
    mask = torch.ones(2, 3, dtype=torch.bool)
    pol = torch.tensor([[3.0, 3.0, 2.0], [1.0, 0.5, 0.5]])
    ref = torch.zeros(2, 3)
    desirable = torch.tensor([True, False])
    kl_pol, kl_ref = torch.tensor([12.0, 12.0]), torch.zeros(2)
    free = O.apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, reweight=False, z0_min=None)
    clamped = O.apo_loss(pol, ref, mask, desirable, kl_pol, kl_ref, reweight=False, z0_min=-5.0, z0_max=5.0)
    assert float(free.z0) == pytest.approx(12.0) and float(clamped.z0) == pytest.approx(5.0)
    # the desirable sample (r = 8) is no longer below the reference point: its loss falls ...
    assert clamped.losses[0] < free.losses[0]
    assert float(clamped.losses[0]) == pytest.approx(1 - torch.sigmoid(torch.tensor(0.1 * (8 - 5))).item())
    # ... and the undesirable one (r = 2) is now below it by less: its loss rises
    assert clamped.losses[1] > free.losses[1]
    # KTO: TRL's >= 0 lifts a negative estimate (-3) to 0; a [-5, 5] clamp keeps -3, a lower
    # reference point: the desirable sample's loss falls, the undesirable one's rises
    sums, neg = pol.sum(-1), torch.tensor([-3.0, -3.0])
    for i, direction in ((0, -1), (1, +1)):
        one = slice(i, i + 1)
        trl = O.kto_loss(sums[one], torch.zeros(1), neg[one], torch.zeros(1), desirable[one])
        wide = O.kto_loss(sums[one], torch.zeros(1), neg[one], torch.zeros(1), desirable[one],
                          z0_min=-5.0, z0_max=5.0)
        assert float(torch.sign(wide - trl)) == direction
    wide = O.kto_loss(sums, ref.sum(-1), neg, torch.zeros(2), desirable, z0_min=-5.0, z0_max=5.0)
    expected = 0.5 * ((1 - torch.sigmoid(torch.tensor(0.1 * (8 + 3))))
                      + (1 - torch.sigmoid(torch.tensor(0.1 * (-3 - 2)))))
    assert float(wide) == pytest.approx(float(expected))


def test_method_defaults_of_the_clamp():
    def clamp(config):
        return config.method_config.effective_z0_clamp

    assert clamp(TrainConfig(method="apo")) == (-5.0, 5.0)
    assert clamp(TrainConfig(method="kto")) == (0.0, None)
    assert clamp(TrainConfig(method="apo", z0_clamp=[0, float("inf")])) == (0.0, None)
    assert clamp(TrainConfig.from_dict({"method": "kto", "z0_clamp": ["-inf", 5]})) == (None, 5.0)


@pytest.mark.parametrize("method, clamp, shift, expected", [
    ("apo", None, -100.0, 5.0),  # estimate ~ +100: the released code's max
    ("apo", ["-inf", "inf"], -100.0, None),  # unclamped: the estimate itself
    ("kto", None, 100.0, 0.0),  # estimate ~ -100: TRL's floor
    ("kto", [-5, 5], 100.0, -5.0),
])
def test_the_step_losses_use_the_configured_clamp(tmp_path, method, clamp, shift, expected):
    run = _run(tmp_path, "run", method=method, z0_clamp=clamp)
    # shift the cached reference scores of the mismatched pairs: kl_ref - shift moves the
    # estimate mean(kl_pol - kl_ref) by -shift
    run.batches.reference.kl_cache += shift
    out = run.step_fn(run.sampler.next_batch(), 0)
    assert abs(out.metrics["z0_unclamped"]) > 50
    want = out.metrics["z0_unclamped"] if expected is None else expected
    assert out.metrics["z0"] == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The no-op filter
# ---------------------------------------------------------------------------------------------
def test_noop_units_keep_zero_at_zero_with_an_asymmetric_range():
    # q01 / q99 = -0.01 / 0.03 on x: the policy's normalization maps a still arm to -0.5 on x,
    # which the no-op test would never call still; the no-op units divide by 0.03 instead
    stats = ActionStatistics(q01=[-0.01] * 6 + [0.0], q99=[0.03] * 6 + [1.0], mask=[True] * 6 + [False])
    still = np.array([STILL])
    assert np.abs(stats.normalize(still)[0, :6]).sum() == pytest.approx(3.0)
    assert np.abs(noop_units(still, stats)[0, :6]).sum() == pytest.approx(0.0)
    lab = label_sources(["policy"] * 4 + ["human"], [MOVE, MOVE, STILL, STILL, MOVE], k=2,
                        noop_filter=True, stats=stats)
    assert lab.noop.tolist() == [False, False, True, True, False]
    assert np.nonzero(lab.undesirable)[0].tolist() == [0, 1]
    # the threshold is in those units: 0.001 per axis is 0.2 summed over six axes of 0.03
    tiny = MOVE.copy()
    tiny[:6] = 0.001
    assert noop_units(np.array([tiny]), stats)[0, :6].sum() == pytest.approx(0.2)
    assert label_sources(["policy"], [tiny], noop_filter=True, noop_threshold=0.3, stats=stats).noop[0]
    assert not label_sources(["policy"], [tiny], noop_filter=True, noop_threshold=0.1, stats=stats).noop[0]


def test_drop_noop_removes_exactly_the_still_policy_steps_and_counts_k_over_the_others(tmp_path):
    # every interaction episode: 24 policy steps, the last 5 before the take-over alternate
    # still / moving, then 4 human steps (one of them still: a still operator still corrects)
    actions = [MOVE] * 19 + [STILL, MOVE, STILL, MOVE, STILL] + [MOVE, STILL, MOVE, MOVE] + [MOVE] * 4
    plain = _run(tmp_path, "plain", samples=_data(actions), method="apo", k=5)
    filt = _run(tmp_path, "filt", samples=_data(actions), method="apo", k=5, drop_noop=True)
    s0, s1 = plain.samples, filt.samples
    starts = s1.intervention_starts()
    assert len(starts) == 3
    still_policy = np.zeros(len(s1), bool)
    for start in starts:
        still_policy[[start - 5, start - 3, start - 1]] = True
        # without the filter: the 5 policy steps right before; with it: the 5 moving ones
        assert np.nonzero(s0.undesirable[start - 10:start])[0].tolist() == [5, 6, 7, 8, 9]
        assert np.nonzero(s1.undesirable[start - 10:start])[0].tolist() == [2, 3, 4, 6, 8]
        assert s1.dropped[start + 1] == s0.dropped[start + 1]  # the still human step stays
    assert np.array_equal(s1.dropped & ~s0.dropped, still_policy)
    assert s1.summary()["undesirable_samples"] == s0.summary()["undesirable_samples"] == 15
    # no dropped step is in any group the sampler draws from
    for rows in s1.groups().values():
        assert not s1.dropped[rows].any()
    drawn = np.concatenate([filt.sampler.next_batch() for _ in range(40)])
    assert not still_policy[drawn].any() and still_policy[np.concatenate(
        [plain.sampler.next_batch() for _ in range(40)])].any()


# ---------------------------------------------------------------------------------------------
# Neighbour-label mismatched pairs
# ---------------------------------------------------------------------------------------------
def test_neighbour_label_logps_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True]])
    partner = torch.tensor([[2, 0]])
    got = O.neighbour_label_logps(logits, mask, partner, torch.tensor([[True, False]]))
    assert float(got) == pytest.approx(float(torch.log_softmax(logits[0, 0], -1)[2]))
    both = O.neighbour_label_logps(logits, mask, partner, mask)
    assert float(both) == pytest.approx(float(torch.log_softmax(logits[0, 0], -1)[2]
                                              + torch.log_softmax(logits[0, 1], -1)[0]))


def _count_scoring(policy, counter):
    """Count the policy's teacher-forced passes (every scoring of the bin head runs one)."""
    inner = policy.token_logits_encoded

    def counted(*args, **kwargs):
        counter.append(args[1].shape)
        return inner(*args, **kwargs)
    policy.token_logits_encoded = counted


def test_neighbour_labels_read_the_partner_off_the_own_pass(tmp_path):
    runs = {mode: _run(tmp_path, mode, method="apo", z0_mode=mode) for mode in ("exact", "neighbour_labels")}
    rows = runs["exact"].sampler.next_batch()
    assert np.array_equal(rows, runs["neighbour_labels"].sampler.next_batch())
    run = runs["neighbour_labels"]
    b, ref = run.batches, run.batches.reference
    inputs = b.inputs(rows, None)
    tok, mask = b.targets(rows)
    ptok, pmask = b.targets(ref.partner[rows])
    width = tok.shape[1]
    ptok, pmask = ptok[:, :width], pmask[:, :width]
    with torch.no_grad():
        # the cached reference value is the start policy's own-pass logits at the partner's labels
        start_logits = run.policy.token_logits(inputs, tok, mask)
    expected_cache = O.neighbour_label_logps(start_logits, mask, ptok, pmask)
    assert torch.allclose(ref.kl_cache[rows], expected_cache, atol=1e-5)
    z0 = {}
    for mode, r in runs.items():
        _perturb(r.policy)
        calls: list[str] = []
        _count_scoring(r.policy, calls)
        out = losses.apo_step(r.batches, rows, 0)
        z0[mode] = out.metrics["z0_unclamped"]
        # the released code's pairs need no second scoring of the policy
        assert len(calls) == (1 if mode == "neighbour_labels" else 2), calls
    with torch.no_grad():
        logits = run.policy.token_logits(inputs, tok, mask)
    expected = (O.neighbour_label_logps(logits, mask, ptok, pmask) - ref.kl_cache[rows]).mean()
    assert z0["neighbour_labels"] == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
    # an autoregressive head conditions later tokens on the partner's (exact) or the sample's own
    # earlier tokens (neighbour labels): the two estimates differ
    assert z0["neighbour_labels"] != pytest.approx(z0["exact"], abs=1e-3)


def test_neighbour_labels_online_pairs_batch_neighbours(tmp_path):
    run = _run(tmp_path, "online", method="kto", z0_mode="neighbour_labels", reference="online")
    _perturb(run.policy)
    rows = run.sampler.next_batch()
    out = losses.kto_step(run.batches, rows, 0)
    b = run.batches
    inputs = b.inputs(rows, 0)
    tok, mask = b.targets(rows)
    ptok, pmask = torch.roll(tok, -1, 0), torch.roll(mask, -1, 0)
    with torch.no_grad():
        pol = O.neighbour_label_logps(run.policy.token_logits(inputs, tok, mask), mask, ptok, pmask)
        ref_logits = b.reference.reference.token_logits(inputs, tok, mask)
        refv = O.neighbour_label_logps(ref_logits, mask, ptok, pmask)
    assert out.metrics["z0_unclamped"] == pytest.approx(float((pol - refv).mean()), rel=1e-4, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# The paper's real-world mix
# ---------------------------------------------------------------------------------------------
def test_demo_mix_matched_takes_as_many_demos_as_intervened_episodes(tmp_path):
    s = _data()  # 6 demos, 3 intervened deployments, 1 deployment without a correction
    assert demo_mix_episodes(s, "matched") == "3"
    run = _run(tmp_path, "matched", samples=_data(), method="dagger", demo_mix="matched")
    used = np.unique(run.samples.episode[run.samples.is_demo & run.samples.trainable_rows()])
    assert len(used) == 3
    equal = _run(tmp_path, "equal", samples=_data(), method="dagger", demo_mix="equal")
    assert len(np.unique(equal.samples.episode[equal.samples.is_demo & equal.samples.trainable_rows()])) == 4
    # held-out episodes do not count
    held = _run(tmp_path, "held", samples=_data(), method="dagger", demo_mix="matched", val_fraction=0.34)
    s = held.samples
    starts = s.intervention_starts()
    intervened = np.unique(s.episode[starts[~s.held_out[starts]]])
    assert s.held_out.any() and len(intervened) >= 2
    assert len(np.unique(s.episode[s.is_demo & s.trainable_rows()])) == len(intervened)


# ---------------------------------------------------------------------------------------------
# The older settings reach the loss
# ---------------------------------------------------------------------------------------------
def _apo_metrics(tmp_path, name, **options):
    run = _run(tmp_path, name, method="apo", batch_size=32, **options)
    _perturb(run.policy)
    rows = run.sampler.next_batch()
    return losses.apo_step(run.batches, rows, 0).metrics


def test_apo_weight_norm_and_group_move_the_weights_the_documented_way(tmp_path):
    base = _apo_metrics(tmp_path, "sum8")
    mean = _apo_metrics(tmp_path, "mean8", apo_weight_norm="mean")
    whole = _apo_metrics(tmp_path, "sum_all", apo_weight_group=0)
    # sum over a group of ~4 desirable rows: lambda_D ~ 1 - exp(-1/4); the mean form lifts it
    # towards 1 - exp(-1) and lowers lambda_U
    assert mean["weight_desirable"] > base["weight_desirable"]
    assert mean["weight_undesirable"] < base["weight_undesirable"]
    # one group of the whole batch of 32: each w ~ 1/16 desirable, 1/8 undesirable
    assert whole["weight_desirable"] < base["weight_desirable"]
    assert whole["weight_undesirable"] > base["weight_undesirable"]


def test_label_smoothing_and_bin_sigma_reach_the_bc_loss(tmp_path):
    def step(**options):
        run = _run(tmp_path, "_".join(options) or "plain", method="bc", **options)
        _perturb(run.policy, scale=1.0)
        rows = run.sampler.next_batch()
        b = run.batches
        with torch.no_grad():
            logits = run.policy.token_logits(b.inputs(rows, 0), *b.targets(rows))
        return float(losses.bc_step(b, rows, 0).loss.detach()), logits, b.targets(rows)

    plain, logits, (tok, mask) = step()
    smooth, _, _ = step(label_smoothing=0.2)
    logp = torch.log_softmax(logits.float(), -1)
    uniform_ce = (-(logp.mean(-1)) * mask).sum(-1) / mask.sum(-1)
    expected = 0.8 * plain + 0.2 * float(uniform_ce.mean())
    assert smooth == pytest.approx(expected, rel=1e-4)
    assert smooth != pytest.approx(plain, rel=1e-3)
    sigma, _, _ = step(bin_sigma=2.0)
    assert sigma != pytest.approx(plain, rel=1e-3)
    # a Gaussian target over neighbouring bins: the expected NLL under that target
    bins = torch.arange(logp.shape[-1]).float()
    g = torch.exp(-0.5 * ((bins[None, None] - tok[..., None].float()) / 2.0) ** 2)
    g = g / g.sum(-1, keepdim=True)
    nll = (-(g * logp).sum(-1) * mask).sum(-1) / mask.sum(-1)
    assert sigma == pytest.approx(float(nll.mean()), rel=1e-4)
