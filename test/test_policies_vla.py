"""Transformers VLA policies on a tiny PaliGemma saved as a real local checkpoint:
OpenVLA-style bins and pi0-FAST-style tokens, LoRA reference, checkpoints, refusals."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from apo_ros.policies import (
    CheckpointError,
    PickleRefusedError,
    RemoteCodeRefusedError,
    build_policy,
    load_policy,
    make_reference,
    save_policy,
)
from apo_ros.policies.testing import default_statistics, random_batch
from apo_ros.policies.tiny import save_tiny_checkpoint

INSTRUCTIONS = ["go", "Put the lemon on the plate."]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny") / "paligemma"))


def make(kind, tiny_dir, **options):
    options.setdefault("chunk_size", 1 if kind == "vla_bins" else 4)
    return build_policy(kind, default_statistics(), instructions=INSTRUCTIONS, pretrained=tiny_dir,
                        device="cpu", **options)


def batch(policy, n=4, seed=0):
    images, proprio, actions = random_batch(n, cameras=len(policy.cameras), seed=seed,
                                            chunk=policy.chunk_size)
    inputs = policy.prepare(images, proprio, [INSTRUCTIONS[i % 2] for i in range(n)])
    tokens, mask = policy.encode_actions(actions)
    return inputs, tokens, mask, actions


def train_step(policy, inputs, tokens, mask, lr=1e-2):
    policy.train()
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=lr)
    loss = -policy.token_logps(inputs, tokens, mask).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    policy.eval()
    return loss.item()


def test_bins_layout_prompt_and_hand_computed_logps(tiny_dir):
    policy = make("vla_bins", tiny_dir, lora=None)
    inputs, tokens, mask, _ = batch(policy)
    vocab = policy.tokenizer.vocab_size
    assert tokens.shape == (4, 8)
    assert ((tokens[:, :7] >= vocab - 256) & (tokens[:, :7] < vocab)).all()  # last 256 ids
    assert (tokens[:, 7] == policy.tokenizer.eos_token_id).all()  # stop token
    assert policy.gripper_positions(tokens, mask)[0].nonzero().flatten().tolist() == [6]
    prompt = policy.tokenizer.decode(inputs["input_ids"][1][inputs["attention_mask"][1].bool()])
    assert "In: What action should the robot take to put the lemon on the plate.?\nOut:" in prompt
    assert (inputs["input_ids"][1] == policy.model.config.image_token_id).sum() == 16
    logps = policy.token_logps(inputs, tokens, mask)
    # by hand: full logits of prefix + targets, log_softmax at the position before each target
    with torch.no_grad():
        logits = policy.model(**policy._sequence(inputs, tokens, mask)).logits
    prefix = inputs["input_ids"].shape[1]
    expected = torch.stack([torch.log_softmax(logits[:, prefix - 1 + i], -1)
                            .gather(1, tokens[:, i:i + 1])[:, 0] for i in range(8)], 1)
    torch.testing.assert_close(logps, expected, rtol=1e-5, atol=1e-5)
    # a row's log-probs do not depend on the rest of the batch (left padding + position ids)
    alone = policy.token_logps(policy.prepare(*_row(inputs_source(policy), 0)), tokens[:1], mask[:1])
    torch.testing.assert_close(alone, logps[:1], rtol=1e-5, atol=1e-5)


def inputs_source(policy):
    images, proprio, _ = random_batch(4, cameras=len(policy.cameras), seed=0, chunk=policy.chunk_size)
    return images, proprio, [INSTRUCTIONS[i % 2] for i in range(4)]


def _row(source, i):
    images, proprio, instructions = source
    return images[i:i + 1], proprio[i:i + 1], instructions[i:i + 1]


def test_masking_zeroes_positions_and_hides_them(tiny_dir):
    policy = make("vla_bins", tiny_dir, lora=None)
    inputs, tokens, mask, _ = batch(policy)
    masked = mask.clone()
    masked[:, 3] = False
    masked[:, 7] = False
    a = policy.token_logps(inputs, tokens, masked)
    changed = tokens.clone()
    changed[:, 3] = tokens[:, 3] - 1
    changed[:, 7] = 5
    b = policy.token_logps(inputs, changed, masked)
    assert (a[:, 3] == 0).all() and (a[:, 7] == 0).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    full = policy.token_logps(inputs, tokens, mask)
    torch.testing.assert_close(a[:, :3], full[:, :3], rtol=0, atol=1e-6)  # before the hole: unchanged


def test_lora_reference_is_the_adapter_disabled_model(tiny_dir):
    policy = make("vla_bins", tiny_dir)  # LoRA rank 32, all-linear by default
    assert policy.uses_lora
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    inputs, tokens, mask, _ = batch(policy)
    ref = make_reference(policy)
    assert ref.shares_weights and ref.policy is policy  # no second copy of the weights
    before = ref.token_logps(inputs, tokens, mask)
    torch.testing.assert_close(before, policy.token_logps(inputs, tokens, mask), rtol=0, atol=0)
    train_step(policy, inputs, tokens, mask, lr=0.05)
    after = policy.token_logps(inputs, tokens, mask)
    assert (after - before).abs().max() > 1e-3  # the adapter moved the policy
    with torch.no_grad(), policy.model.disable_adapter():
        disabled = policy.token_logps(inputs, tokens, mask)
    ref_now = ref.token_logps(inputs, tokens, mask)
    assert torch.equal(ref_now, disabled) and torch.equal(ref_now, before)
    assert not ref_now.requires_grad and policy.uses_lora  # adapter back on afterwards
    assert torch.equal(policy.token_logps(inputs, tokens, mask), after)


@pytest.mark.parametrize("kind", ["vla_bins", "vla_fast"])
def test_train_step_and_prediction_on_cpu(tiny_dir, kind):
    policy = make(kind, tiny_dir)
    inputs, tokens, mask, actions = batch(policy)
    losses = [train_step(policy, inputs, tokens, mask, lr=0.05) for _ in range(3)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    predicted, pmask = policy.predict_tokens(inputs)
    assert predicted.shape[0] == 4 and pmask.dtype == torch.bool
    chunk, ok = policy.predict(inputs)
    assert chunk.shape == (4, policy.chunk_size, 7) and ok.dtype == bool
    assert (chunk[~ok] == 0).all()
    if kind == "vla_bins":
        assert ok.all()
        # greedy == argmax over the action ids of the teacher-forced distribution
        logits = policy.token_logits(inputs, predicted, pmask)[:, :7]
        valid = policy.valid_target_ids
        assert valid.sum() == 257 and valid[policy.stop_id]  # 256 bins + stop
        best = logits.float().masked_fill(~policy.allowed_ids, -torch.inf).argmax(-1)
        assert torch.equal(best, predicted[:, :7])
        assert (predicted[:, 7] == policy.stop_id).all()


def test_fast_tokens_roundtrip_and_flagged_failures(tiny_dir):
    policy = make("vla_fast", tiny_dir)
    assert not policy.gripper_positions(*policy.encode_actions(random_batch(2, chunk=4)[2])).any()
    inputs, tokens, mask, actions = batch(policy)
    lengths = mask.sum(1)
    rows = [tokens[i, :lengths[i]] for i in range(4)]
    assert all(int(r[-1]) == policy.stop_id for r in rows)  # each ends in the stop token
    lo = policy.fast_end - policy.config.fast_vocab_size + 1
    assert all(((r[:-1] >= lo) & (r[:-1] <= policy.fast_end)).all() for r in rows)
    decoded, ok = policy.decode_tokens(tokens, mask)
    assert ok.all() and np.abs(decoded - actions).max() < 0.01
    bad = tokens.clone()
    bad_mask = mask.clone()
    bad_mask[0, lengths[0] - 1] = False  # 0: stop token cut off
    bad[1, 0] = policy.fast_end - (policy.fast.vocab_size + 3)  # 1: id outside the FAST range
    bad[3, 0] = policy.stop_id  # 3: empty body
    decoded, ok = policy.decode_tokens(bad, bad_mask)
    assert not ok[0] and not ok[1] and not ok[3]
    assert (decoded[~ok] == 0).all()
    # a truncated sequence (one FAST token dropped) decodes to the wrong coefficient count
    short = torch.cat([tokens[:1, 1:lengths[0]], tokens[:1, :1] * 0], 1)
    _, ok = policy.decode_tokens(short, torch.ones_like(short, dtype=torch.bool))
    assert not ok[0]
    # untrained prediction: no stop token within the cap -> flagged, zero chunk
    predicted, pmask = policy.predict_tokens(inputs)
    chunk, ok = policy.decode_tokens(predicted, pmask)
    no_stop = ~(predicted == policy.stop_id).any(1)
    assert (~ok[no_stop.numpy()]).all() and (chunk[~ok] == 0).all()


@pytest.mark.parametrize("kind,lora,merge", [("vla_bins", False, True), ("vla_bins", True, False),
                                             ("vla_bins", True, True), ("vla_fast", True, False)])
def test_save_load_reproduces_outputs(tiny_dir, tmp_path, kind, lora, merge):
    options = {} if lora else {"lora": None}
    policy = make(kind, tiny_dir, **options)
    inputs, tokens, mask, _ = batch(policy)
    train_step(policy, inputs, tokens, mask, lr=0.05)
    expected = policy.token_logps(inputs, tokens, mask)
    path = str(tmp_path / "ckpt")
    pid = save_policy(policy, path, merge_lora=merge, extra={"objective": "bc"})
    assert os.path.isfile(os.path.join(path, "backbone", "model.safetensors"))
    assert os.path.isdir(os.path.join(path, "adapter")) == (lora and not merge)
    loaded = load_policy(path, device="cpu")
    assert loaded.kind == kind and loaded.policy_id == pid and loaded.uses_lora == lora
    got = loaded.token_logps(loaded.prepare(*inputs_source(loaded)), tokens, mask)
    if lora and merge:  # W + BA folded into W: equal up to float rounding
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, expected)
    if lora and merge:  # the fresh adapter on the merged weights starts as the identity
        with torch.no_grad(), loaded.model.disable_adapter():
            base = loaded.token_logps(loaded.prepare(*inputs_source(loaded)), tokens, mask)
        torch.testing.assert_close(base, got, rtol=0, atol=0)
    predicted, original = loaded.predict_tokens(inputs)[0], policy.predict_tokens(inputs)[0]
    if lora and merge:  # rounding may flip a near-tie between two tokens, not more
        assert predicted.shape == original.shape and (predicted == original).float().mean() >= 0.9
    else:
        assert torch.equal(predicted, original)
    if kind == "vla_fast":
        sample = random_batch(3, chunk=4, seed=5)[2]
        assert torch.equal(loaded.encode_actions(sample)[0], policy.encode_actions(sample)[0])
    plain = load_policy(path, device="cpu", lora=False)  # inference: no adapter
    assert not plain.uses_lora
    torch.testing.assert_close(plain.token_logps(inputs, tokens, mask), expected, rtol=1e-5, atol=1e-5)


def test_backbone_refusals_and_missing_pieces(tiny_dir, tmp_path):
    policy = make("vla_fast", tiny_dir, lora=None)
    path = str(tmp_path / "ckpt")
    save_policy(policy, path)
    # remote code only with the explicit flag
    cfg_path = os.path.join(path, "backbone", "config.json")
    original = open(cfg_path).read()
    cfg = json.loads(original)
    cfg["auto_map"] = {"AutoModelForImageTextToText": "modeling_x.X"}
    open(cfg_path, "w").write(json.dumps(cfg))
    with pytest.raises(RemoteCodeRefusedError, match="trust_remote_code"):
        load_policy(path, device="cpu")
    open(cfg_path, "w").write(original)
    # pickle-only backbone weights
    weights = os.path.join(path, "backbone", "model.safetensors")
    pickled = os.path.join(path, "backbone", "pytorch_model.bin")
    os.rename(weights, pickled)
    with pytest.raises(PickleRefusedError, match=r"pytorch_model\.bin"):
        load_policy(path, device="cpu")
    os.rename(pickled, weights)
    shutil.rmtree(os.path.join(path, "fast_tokenizer"))
    with pytest.raises(CheckpointError, match="fast_tokenizer.json"):
        load_policy(path, device="cpu")
    os.remove(cfg_path)
    with pytest.raises(CheckpointError, match="config.json"):
        load_policy(path, device="cpu")
    # a bare transformers checkpoint is not a policy, and says how to make one
    with pytest.raises(CheckpointError, match="policy new --kind vla_bins"):
        load_policy(tiny_dir)


def test_pretrained_with_remote_code_refused_at_build(tiny_dir, tmp_path):
    remote = str(tmp_path / "remote")
    shutil.copytree(tiny_dir, remote)
    cfg = json.load(open(os.path.join(remote, "config.json")))
    cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig"}
    json.dump(cfg, open(os.path.join(remote, "config.json"), "w"))
    with pytest.raises(RemoteCodeRefusedError):
        make("vla_bins", remote)


def test_full_weight_reference_is_a_frozen_copy_and_collate_pads_left(tiny_dir):
    policy = make("vla_bins", tiny_dir, lora=None)
    ref = make_reference(policy)
    assert not ref.shares_weights and ref.policy.model is not policy.model
    images, proprio, instructions = inputs_source(policy)
    inputs = policy.prepare(images, proprio, instructions)
    parts = [policy.prepare(*_row((images, proprio, instructions), i)) for i in range(4)]
    collated = policy.collate_inputs(parts)  # prompts of different lengths, left-padded
    assert all(torch.equal(collated[k], inputs[k]) for k in inputs)
    tokens, mask = policy.encode_actions(random_batch(4, cameras=1)[2])
    before = ref.token_logps(inputs, tokens, mask)
    assert torch.equal(before, policy.token_logps(inputs, tokens, mask))
    train_step(policy, inputs, tokens, mask, lr=0.05)
    assert torch.equal(ref.token_logps(inputs, tokens, mask), before)
    assert not torch.allclose(policy.token_logps(inputs, tokens, mask), before)
