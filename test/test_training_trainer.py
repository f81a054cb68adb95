"""The trainer end to end on real bags (written with EpisodeWriter) and real small policies."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from apo_ros.cli import main
from apo_ros.policies import load_policy
from apo_ros.recording.synthetic import write_synthetic_episode
from apo_ros.training import objectives
from apo_ros.training.cache import DataError
from apo_ros.training.policy_init import init_policy
from apo_ros.training.registry import get_method, method_names
from apo_ros.training.trainer import TrainConfig, TrainingError, train_policy

TINY = {"image_size": 16, "channels": [4, 4], "hidden": 16}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    demos = [str(root / "demo0"), str(root / "demo1")]
    data = [str(root / "round1" / "int0"), str(root / "round1" / "int1")]
    write_synthetic_episode(demos[0], ["expert"] * 12, seed=1, size=16)
    write_synthetic_episode(demos[1], ["expert"] * 12, seed=2, size=16)
    write_synthetic_episode(data[0], ["policy"] * 10 + ["human"] * 4 + ["policy"] * 4, seed=3, size=16)
    write_synthetic_episode(data[1], ["policy"] * 6 + ["human"] * 3 + ["policy"] * 5 + ["human"] * 2,
                            seed=4, size=16)
    policy_only = str(root / "policy_only")
    write_synthetic_episode(policy_only, ["policy"] * 8, seed=5, size=16)
    return {"demos": demos, "data": data, "data_dir": str(root / "round1"), "policy_only": policy_only,
            "cache": str(root / "cache")}


def _config(bags, **kw):
    base = dict(steps=4, batch_size=8, log_every=2, save_every=0, progress=False, cache_dir=bags["cache"],
                policy=dict(TINY), threads=1)
    if kw.get("method") == "tpo":
        base["tpo_window"] = 4
    base.update(kw)
    return TrainConfig(**base)


def _params(policy):
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


def _rows(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_end_to_end(bags, tmp_path, method):
    out = str(tmp_path / method)
    path = train_policy(_config(bags, method=method), bags["demos"], [bags["data_dir"]], "small", out)
    assert path == os.path.join(out, "policy")
    policy = load_policy(path)
    assert policy.policy_id and policy.training_info["method"] == method
    assert policy.training_info["step"] == 4
    rows = _rows(out)
    assert [r["step"] for r in rows] == ["2", "4"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    if get_method(method).needs_reference:
        assert os.path.isfile(os.path.join(out, "reference_cache.safetensors"))
        assert rows[-1]["reward_desirable"] != ""
    # the last periodic checkpoint is the same policy
    last = load_policy(os.path.join(out, "checkpoints", "step-00000004", "policy"))
    assert last.policy_id == policy.policy_id
    # and the weights moved away from the (seeded) initial ones
    from apo_ros.training.samples import load_samples

    samples = load_samples(bags["demos"], [bags["data_dir"]], cache_dir=bags["cache"])
    initial, _ = init_policy("small", _config(bags, method=method), samples, None)
    before, after = _params(initial), _params(policy)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_apo_variants_run(bags, tmp_path):
    """Each APO option changes what it should, against the same seeded run."""

    def run(name, **options):
        out = str(tmp_path / name)
        cfg = _config(bags, method="apo", steps=3, log_every=1, augment=False, lr=3e-3, **options)
        train_policy(cfg, bags["demos"], bags["data"], "small", out)
        return [{k: float(v) for k, v in r.items() if v != ""} for r in _rows(out)]

    base = run("base")
    assert len(base) == 3
    # the clamp is applied: z0 = clamp(z0_unclamped, -5, 5) (apo default) at every step
    for row in base:
        assert row["z0"] == pytest.approx(min(max(row["z0_unclamped"], -5.0), 5.0), abs=1e-6)
    pinned = run("pinned", z0_clamp=[1.0, 1.0])
    assert all(r["z0"] == pytest.approx(1.0) for r in pinned)
    # at step 1 the policy is its reference: every reward (hence the exact z0) is 0. A batch of 8
    # drawn at the released shares holds 4 desirable + 2 human (desirable) + 2 undesirable rows;
    # with static weights (1) and one micro-group the loss is the sum of the row losses: 0.5
    # each at z0 = 0, and at z0 = 1 sigmoid(0.1) per desirable row, sigmoid(-0.1) per undesirable
    assert base[0]["z0_unclamped"] == pytest.approx(0.0, abs=1e-5)
    flat = run("flat", reweight=False)
    assert flat[0]["loss"] == pytest.approx(8 * 0.5, rel=1e-5)
    pinned_flat = run("pinned_flat", reweight=False, z0_clamp=[1.0, 1.0])
    sig = 1 / (1 + math.exp(-0.1))
    assert pinned_flat[0]["loss"] == pytest.approx(6 * sig + 2 * (1 - sig), rel=1e-5)
    # without reweighting the static weights (1) are used; the adaptive ones are below 1
    assert flat[0]["weight_desirable"] == 1.0 and base[0]["weight_desirable"] < 1.0
    # matched z0 (the released code's cheap estimate) is the batch's own mean reward: with the
    # gripper unmasked, (6 r_desirable + 2 r_undesirable) / 8 at every step
    matched = run("matched", z0_mode="matched", z0_clamp=["-inf", "inf"], mask_gripper=False)
    for row in matched:
        own = (6 * row["reward_desirable"] + 2 * row["reward_undesirable"]) / 8
        assert row["z0_unclamped"] == pytest.approx(own, rel=1e-4, abs=1e-6)
    # ... which the exact estimate (mismatched pairs) is not, once the policy has moved
    assert matched[2]["z0_unclamped"] != pytest.approx(base[2]["z0_unclamped"], abs=1e-4)
    # online exact z0 pairs batch neighbours instead of the cached fixed partners: the same 0 at
    # step 1 (policy = reference), another estimate after
    online = run("online", reference="online")
    assert online[0]["z0_unclamped"] == pytest.approx(0.0, abs=1e-5)
    assert online[2]["z0_unclamped"] != pytest.approx(base[2]["z0_unclamped"], abs=1e-6)
    # mean instead of sum over a micro-group of 8: the step-1 loss is divided by 8 exactly
    mean = run("mean", apo_reduction="mean")
    assert mean[0]["loss"] == pytest.approx(base[0]["loss"] / 8, rel=1e-5)
    # gripper masking changes the undesirable rewards once the policy has moved, and only those:
    # at step 1 (before any update differs) the two runs are the same
    unmasked = run("unmasked", mask_gripper=False)
    assert unmasked[0]["loss"] == pytest.approx(base[0]["loss"], rel=1e-6)
    assert unmasked[2]["reward_undesirable"] != pytest.approx(base[2]["reward_undesirable"], abs=1e-7)


def test_state_policy_trains_from_object_poses(bags, tmp_path):
    out = str(tmp_path / "state")
    path = train_policy(_config(bags, method="bc", policy={"hidden": 16, "layers": 2}), bags["demos"], [],
                        "state", out)
    policy = load_policy(path)
    assert policy.kind == "state" and policy.cameras == ()
    # standardization from the demos' object poses (two objects recorded by the synthetic bags)
    assert policy.config.n_objects == 2 and len(policy.config.object_mean) == 14
    # and it continues with a preference objective on the interaction bags
    train_policy(_config(bags, method="apo"), bags["demos"], bags["data"], path, str(tmp_path / "apo"))


def test_state_policy_refuses_bags_without_object_poses(tmp_path):
    from apo_ros.recording.writer import EpisodeWriter

    bag = str(tmp_path / "noposes")
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(bag, metadata={"instruction": "lift the red cube"}, cameras=())
    from apo_ros.recording.synthetic import START_NS, STEP_NS, synthetic_observation

    for i in range(6):
        obs = synthetic_observation(rng, START_NS + i * STEP_NS, cameras=(), index=i)
        obs.object_poses = np.zeros((0, 7), np.float32)
        writer.write_observation(obs)
        writer.write_action(obs.stamp_ns + 1, np.zeros(7), "expert", obs.stamp_ns)
    writer.close("success")
    with pytest.raises(DataError, match="object poses"):
        train_policy(TrainConfig(method="bc", steps=1, batch_size=2, progress=False, cache_dir=None),
                     [bag], [], "state", str(tmp_path / "out"))


def test_validation_early_stopping_and_best_weights(bags, tmp_path):
    """A run that cannot improve (lr ~ 0) stops after `patience` validation passes and its final
    policy is the best pass's weights: the initial ones."""
    from apo_ros.training.samples import load_samples

    demos = bags["demos"] + [bags["policy_only"]]  # three demo episodes: one held out
    cfg = _config(bags, method="bc", steps=20, lr=1e-12, val_fraction=0.34, val_every=2, patience=2,
                  warmup_steps=0)
    out = str(tmp_path / "early")
    path = train_policy(cfg, demos, [], "small", out)
    rows = _rows(out)
    assert rows[0]["step"] == "0" and rows[0]["val_nll_demos"] and rows[0]["train_nll"]
    policy = load_policy(path)
    info = policy.training_info
    assert info["stopped_early"] and info["validation"]["best_step"] == 0 and info["step"] == 0
    assert int(rows[-1]["step"]) == 4  # passes at 2 and 4 did not improve on step 0
    samples = load_samples(demos, [], cache_dir=bags["cache"])
    samples.split_episodes(cfg.val_fraction, cfg.seed)
    initial, _ = init_policy("small", cfg, samples, None)
    before, after = _params(initial), _params(policy)
    assert all(torch.equal(before[n], after[n]) for n in before)
    # a learning run improves on held-out demos and keeps its best step
    out2 = str(tmp_path / "learns")
    path2 = train_policy(_config(bags, method="bc", steps=6, lr=3e-3, val_fraction=0.34, val_every=3),
                         demos, [], "small", out2)
    validation = load_policy(path2).training_info["validation"]
    assert validation["best_step"] in (3, 6)
    assert validation["best"]["val_nll_demos"] < validation["first"]["val_nll_demos"]


def test_cached_reference_equals_online(bags, tmp_path):
    """With no augmentation and the matched z0, cached and online reference give the same run."""
    losses = {}
    for mode in ("cached", "online"):
        out = str(tmp_path / mode)
        train_policy(_config(bags, method="apo", steps=4, log_every=1, augment=False, z0_mode="matched",
                             reference=mode), bags["demos"], bags["data"], "small", out)
        losses[mode] = [float(r["loss"]) for r in _rows(out)]
    assert losses["cached"] == pytest.approx(losses["online"], rel=1e-5, abs=1e-7)


def test_resume_gives_same_parameters(bags, tmp_path):
    cfg = dict(method="apo", steps=6, save_every=2, keep_checkpoints=1)
    full = train_policy(_config(bags, **cfg), bags["demos"], bags["data"], "small", str(tmp_path / "full"))
    out = str(tmp_path / "split")
    part = train_policy(_config(bags, max_steps_this_run=3, **cfg), bags["demos"], bags["data"], "small", out)
    assert part.endswith(os.path.join("step-00000003", "policy"))
    with pytest.raises(TrainingError, match="--resume"):
        train_policy(_config(bags, **cfg), bags["demos"], bags["data"], "small", out)
    resumed = train_policy(_config(bags, **cfg), bags["demos"], bags["data"], "small", out, resume=True)
    a, b = _params(load_policy(full)), _params(load_policy(resumed))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the interrupted run also logged the step it stopped at
    assert [r["step"] for r in _rows(out)] == ["2", "3", "4", "6"]
    # only keep_checkpoints periodic checkpoints remain, no temporary folders
    names = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert names == ["step-00000006"]
    # trainer state is pickle-free
    state = os.listdir(os.path.join(out, "checkpoints", "step-00000006", "trainer_state"))
    assert sorted(state) == ["optimizer.safetensors", "rng.safetensors", "state.json",
                             "trainable.safetensors"]


def test_nan_loss_stops_with_clear_error(bags, tmp_path, monkeypatch):
    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(objectives, "bc_loss", nan_loss)
    out = str(tmp_path / "nan")
    with pytest.raises(TrainingError, match=r"loss is nan at step 1.*nothing saved"):
        train_policy(_config(bags, method="bc"), bags["demos"], [], "small", out)
    assert not os.path.exists(os.path.join(out, "policy"))
    assert not os.path.exists(os.path.join(out, "checkpoints"))


def test_methods_refuse_missing_interaction_data(bags, tmp_path):
    for method in ("dagger", "sirius", "kto", "tpo", "apo"):
        with pytest.raises(DataError, match="needs interaction data"):
            train_policy(_config(bags, method=method), bags["demos"], [], "small", str(tmp_path / method))
    for method in ("kto", "tpo", "apo"):
        with pytest.raises(DataError, match="interventions"):
            train_policy(_config(bags, method=method), bags["demos"], [bags["policy_only"]], "small",
                         str(tmp_path / f"{method}2"))
    with pytest.raises(DataError, match="--demos"):
        train_policy(_config(bags, method="bc"), [], bags["data"], "small", str(tmp_path / "bc"))


def test_apo_gradient_signs_on_real_policy(bags, tmp_path):
    """Through the real small policy and the trainer's batch pieces: d loss / d logp < 0 on
    desirable tokens, > 0 on undesirable ones, exactly 0 on an undesirable sample's (masked)
    gripper token."""
    from apo_ros.training.batches import logps_and_argmax
    from apo_ros.training.objectives import apo_loss
    from apo_ros.training.samples import load_samples
    from apo_ros.training.trainer import prepare_run

    cfg = _config(bags, method="apo", augment=False)
    samples = load_samples(bags["demos"], bags["data"], cache_dir=bags["cache"])
    run = prepare_run(cfg, samples, "small", str(tmp_path))
    policy, b = run.policy, run.batches
    with torch.no_grad():  # move the policy away from the reference so rewards are not all zero
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = run.sampler.next_batch()
    inputs = b.inputs(idx, None)
    tok, mask = b.targets(idx)
    # the one-pass log-probs + argmax path agrees with the policy's own token_logps
    logps, argmax, _ = logps_and_argmax(policy, inputs, tok, mask, True)
    assert torch.allclose(logps, policy.token_logps(inputs, tok, mask), atol=1e-6)
    assert argmax.shape == tok.shape
    logps = policy.token_logps(inputs, tok, mask)
    logps.retain_grad()
    ref = b.reference.logps(idx, inputs, tok, mask)
    kl_pol, kl_ref = b.reference.mismatched(idx, inputs, tok, mask, logps, ref)
    errors, ok = b.action_errors(idx, argmax, mask)
    desirable = b.desirable(idx)
    assert desirable.any() and (~desirable).any()
    grip = policy.gripper_positions(tok, mask)
    terms = apo_loss(logps, ref, mask, desirable, kl_pol, kl_ref, gripper_mask=grip,
                     action_errors=errors, decode_ok=ok)
    terms.loss.backward()
    g = logps.grad
    und = ~desirable
    assert torch.all(g[desirable][mask[desirable]] < 0)
    assert torch.all(g[und][mask[und] & ~grip[und]] > 0)
    assert grip[und].any() and torch.all(g[und][grip[und]] == 0)


def test_cli_train_and_errors(bags, tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(json.dumps({"method": "kto", "steps": 2, "batch_size": 8, "log_every": 1,
                               "progress": False, "policy": TINY, "threads": 1}))
    out = str(tmp_path / "cli")
    code = main(["train", "--config", str(cfg), "--demos", *bags["demos"], "--data", bags["data_dir"],
                 "--init", "small", "--out", out, "--cache-dir", bags["cache"], "--seed", "3"])
    assert code == 0
    assert capsys.readouterr().out.strip() == os.path.join(out, "policy")
    saved = json.load(open(os.path.join(out, "train_config.json")))
    assert saved["config"]["method"] == "kto" and saved["config"]["seed"] == 3
    # continue training from that checkpoint with another method
    code = main(["train", "--method", "apo", "--steps", "2", "--batch-size", "8", "--no-progress",
                 "--demos", *bags["demos"], "--data", *bags["data"], str(tmp_path / "nope"),
                 "--init", os.path.join(out, "policy"), "--out", str(tmp_path / "cli2"), "--no-cache"])
    err = capsys.readouterr().err
    assert code == 0 and "skipping" in err and "nope: does not exist" in err
    code = main(["train", "--method", "apo", "--demos", *bags["demos"], "--init", "small",
                 "--out", str(tmp_path / "cli3"), "--no-cache"])
    assert code == 2 and "needs interaction data" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    code = main(["train", "--config", str(bad), "--demos", *bags["demos"], "--init", "small",
                 "--out", str(tmp_path / "cli4")])
    assert code == 2 and "bad.yaml: unknown option(s) ['stepz']" in capsys.readouterr().err


@pytest.mark.parametrize("yaml_text, flags, message", [
    ("steps: ten\n", [], "steps: expected int, got 'ten'"),
    ("policy: {image_sise: 16}\n", [], "unknown option(s) ['image_sise']"),
    ("policy: [1, 2]\n", [], "policy: expected a mapping"),
    ("policy: {layers: 2}\n", [], "['layers'] are not options of the small policy"),
    ("", ["--policy.image_size", "big"], "policy.image_size: "),
    ("", ["--out", "/proc/apo_ros_cannot_write"], "--out"),
    ("", ["--init", "/nonexistent/ckpt"], "neither a checkpoint directory nor a policy kind"),
])
def test_cli_refuses_bad_options_before_reading_bags(bags, tmp_path, capsys, monkeypatch, yaml_text, flags,
                                                       message):
    """Each mistake: one line, exit 2, and no bag read (load_samples is never reached)."""
    import apo_ros.training.trainer as trainer_module

    def no_loading(*args, **kwargs):
        raise AssertionError("bags were loaded before the options were checked")

    monkeypatch.setattr(trainer_module, "load_samples", no_loading)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml_text)
    args = {"--init": "small", "--out": str(tmp_path / "out")}
    rest = []
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in args:
            args[flag] = value
        else:
            rest += [flag, value]
    code = main(["train", "--config", str(cfg), "--demos", *bags["demos"], *rest,
                 *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_yaml_numbers_and_nested_flags(tmp_path):
    """`lr: 1e-4` (a string to YAML 1.1) is the number; every field is a flag, nested ones too."""
    import argparse

    from apo_ros.training.cli import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: 1e-4\nmethod: bc\npolicy: {chunk_size: 4}\n")
    args = parser.parse_args(["train", "--init", "small", "--out", "x", "--config", str(cfg),
                              "--policy.image_size", "32", "--val_fraction", "0.2", "--batch-size", "7"])
    config = build_config(args)
    assert config.lr == 1e-4 and config.method == "bc" and config.val_fraction == 0.2
    assert config.batch_size == 7
    assert config.policy == {"chunk_size": 4, "image_size": 32}
    assert config.policy_options("small").build_options() == {"chunk_size": 4, "image_size": 32}


def test_lora_vla_trains_and_resumes_exactly(bags, tmp_path):
    """vla_bins (tiny PaliGemma + LoRA): only the adapter trains; the reference is the disabled
    adapter; resume restores the adapter and optimizer exactly."""
    from safetensors.torch import load_file

    cfg = dict(method="apo", steps=4, batch_size=4, save_every=2, policy={}, log_every=1)
    full = train_policy(_config(bags, **cfg), bags["demos"], bags["data"], "vla_bins",
                        str(tmp_path / "full"))
    out = str(tmp_path / "split")
    train_policy(_config(bags, max_steps_this_run=2, **cfg), bags["demos"], bags["data"], "vla_bins", out)
    resumed = train_policy(_config(bags, **cfg), bags["demos"], bags["data"], "vla_bins", out, resume=True)
    a, b = load_policy(full, lora=False), load_policy(resumed, lora=False)
    assert a.policy_id == b.policy_id
    trainable = load_file(os.path.join(out, "checkpoints", "step-00000004", "trainer_state",
                                       "trainable.safetensors"))
    assert trainable and all("lora_" in name for name in trainable)
    # one row per step (log_every=1): the resumed run logged the same losses
    assert [r["loss"] for r in _rows(out)] == [r["loss"] for r in _rows(str(tmp_path / "full"))]


def test_two_processes_match_one_process_on_the_same_global_batch(bags, tmp_path):
    """torchrun, 2 gloo processes x 8 samples = one process x 16 samples: the same global
    batches, the same loss (z0 averaged across processes before its clamp, APO's micro-groups
    of 8), the same gradients (their norm, and the weights after two AdamW steps). Rank 0
    alone writes."""
    import subprocess
    import sys

    options = {"method": "apo", "steps": 2, "log_every": 1, "progress": False, "threads": 1,
               "policy": TINY, "augment": False, "warmup_steps": 0, "lr": 1e-3, "z0_clamp": [-5.0, "inf"],
               "tensorboard": False}
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(json.dumps({**options, "batch_size": 8}))
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "apo_ros.cli", "train", "--config", str(cfg), "--demos", *bags["demos"],
         "--data", *bags["data"], "--init", "small", "--out", out, "--cache-dir", bags["cache"]],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == os.path.join(out, "policy")  # one line: rank 0 only
    single = str(tmp_path / "single")
    train_policy(TrainConfig(**{**options, "batch_size": 16, "cache_dir": bags["cache"]}), bags["demos"],
                 bags["data"], "small", single)
    two, one = _rows(out), _rows(single)
    assert [r["step"] for r in two] == [r["step"] for r in one] == ["1", "2"]
    for a, b in zip(two, one):
        for key in ("loss", "grad_norm", "z0_unclamped"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key
    assert float(one[1]["z0_unclamped"]) != 0.0  # the policy moved: z0 is a real check at step 2
    p2 = _params(load_policy(os.path.join(out, "policy")))
    p1 = _params(load_policy(os.path.join(single, "policy")))
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], rtol=1e-4, atol=1e-5)


def test_vla_fast_fits_its_tokenizer_on_the_training_actions(bags):
    """`--init vla_fast` fits the FAST BPE on the training demos' chunks, not on synthetic ones."""
    from apo_ros.policies.vla import fit_fast_tokenizer
    from apo_ros.training.samples import load_samples

    cfg = _config(bags, method="bc", policy={"chunk_size": 4})
    samples = load_samples(bags["demos"], [], cache_dir=bags["cache"])
    samples.split_episodes(0.0, 0)
    samples.select_demos("all", 0)
    policy, _ = init_policy("vla_fast", cfg, samples, "cpu")
    rows = np.nonzero(samples.is_demo & ~samples.continues_chunk)[0]
    chunks = samples.action_targets(rows, 4).astype(np.float64)
    vocab, scale = policy.config.fast_vocab_size, policy.config.fast_scale
    on_data = fit_fast_tokenizer(policy.stats, chunks, 4, vocab, scale)
    synthetic = fit_fast_tokenizer(policy.stats, None, 4, vocab, scale)
    normalized = policy.stats.normalize(chunks)
    used = policy.fast.encode_batch(normalized)
    assert used == on_data.encode_batch(normalized)
    assert used != synthetic.encode_batch(normalized)


def test_train_reports_a_killed_recording_it_skips(bags, tmp_path, capsys):
    """The same bag rules as `bags info`: a recording whose writer never finished is named."""
    import shutil

    from apo_ros.recording.synthetic import write_synthetic_episode

    folder = tmp_path / "demos"
    for demo in bags["demos"]:
        shutil.copytree(demo, folder / os.path.basename(demo))
    writer, _ = write_synthetic_episode(str(folder / "killed"), ["expert"] * 4, seed=9, size=16, close=False)
    code = main(["train", "--method", "bc", "--steps", "1", "--batch-size", "4", "--no-progress",
                 "--demos", str(folder), "--init", "small", "--out", str(tmp_path / "out"), "--no-cache",
                 "--policy.image_size", "16", "--policy.channels", "[4, 4]", "--policy.hidden", "16"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipping" in err and "killed" in err
    assert json.load(open(tmp_path / "out" / "train_config.json"))["samples"]["bags"] == 2
