"""Policy checkpoints: exact round trip, content-hash ids, atomic replace, refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from apo_ros.policies import (
    CheckpointError,
    PickleRefusedError,
    RemoteCodeRefusedError,
    build_policy,
    load_policy,
    policy_id,
    save_policy,
    verify_policy_id,
)
from apo_ros.policies.errors import check_remote_code
from apo_ros.policies.testing import default_statistics, random_batch

INSTRUCTIONS = ["open it", "close it"]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_policy():
    return build_policy("small", default_statistics(0.03), instructions=INSTRUCTIONS, device="cpu",
                        channels=(8, 16, 16), hidden=64)


def test_small_roundtrip_is_exact_and_id_is_content_hash(tmp_path):
    policy = small_policy()
    images, proprio, actions = random_batch(4)
    inputs = policy.prepare(images, proprio, INSTRUCTIONS * 2)
    tokens, mask = policy.encode_actions(actions)
    pid = save_policy(policy, str(tmp_path / "ckpt"), extra={"objective": "bc", "steps": 0})
    assert pid == policy.policy_id == policy_id(str(tmp_path / "ckpt")) and len(pid) == 12
    assert verify_policy_id(str(tmp_path / "ckpt"))
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert names == ["action_tokenizer.json", "apo_policy.json", "dataset_statistics.json",
                     "model.safetensors"]
    loaded = load_policy(str(tmp_path / "ckpt"), device="cpu")
    assert loaded.kind == "small" and loaded.policy_id == pid
    assert loaded.training_info == {"objective": "bc", "steps": 0}
    assert torch.equal(loaded.token_logps(inputs, tokens, mask), policy.token_logps(inputs, tokens, mask))
    assert torch.equal(loaded.predict_tokens(inputs)[0], policy.predict_tokens(inputs)[0])
    assert loaded.stats.statistics_id() == policy.stats.statistics_id()
    # same weights -> same id (training notes are not part of it); new weights -> new id
    assert save_policy(loaded, str(tmp_path / "again"), extra={"note": "other"}) == pid
    with torch.no_grad():
        loaded.head_bias.add_(0.1)
    assert save_policy(loaded, str(tmp_path / "ckpt")) != pid  # replaces the old checkpoint atomically
    assert verify_policy_id(str(tmp_path / "ckpt")) and verify_policy_id(str(tmp_path / "again"))
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert leftovers == []


def test_tampered_weights_fail_verification(tmp_path):
    path = str(tmp_path / "ckpt")
    save_policy(small_policy(), path)
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    assert not verify_policy_id(path)


def test_refuses_to_overwrite_other_directories(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_policy(small_policy(), str(target))
    assert (target / "precious.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary directory left behind


@pytest.mark.parametrize("missing", ["apo_policy.json", "dataset_statistics.json", "model.safetensors"])
def test_missing_piece_is_named(tmp_path, missing):
    path = str(tmp_path / "ckpt")
    save_policy(small_policy(), path)
    os.remove(os.path.join(path, missing))
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_policy(path, device="cpu")


def test_bad_config_and_unknown_kind(tmp_path):
    path = str(tmp_path / "ckpt")
    save_policy(small_policy(), path)
    cfg_path = os.path.join(path, "apo_policy.json")
    document = json.load(open(cfg_path))
    document["kind"] = "mystery"
    json.dump(document, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="unknown policy kind 'mystery'"):
        load_policy(path)
    open(cfg_path, "w").write("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_policy(path)
    with pytest.raises(CheckpointError, match="no such policy checkpoint"):
        load_policy(str(tmp_path / "nowhere"))


def test_pickle_only_checkpoints_are_refused(tmp_path):
    path = str(tmp_path / "ckpt")
    save_policy(small_policy(), path)
    os.remove(os.path.join(path, "model.safetensors"))
    torch.save({"w": torch.zeros(1)}, os.path.join(path, "pytorch_model.bin"))
    with pytest.raises(PickleRefusedError, match=r"pytorch_model\.bin.*safetensors only"):
        load_policy(path)
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save({"w": torch.zeros(1)}, str(bare / "model.pt"))
    with pytest.raises(PickleRefusedError, match="never loads"):
        load_policy(str(bare))


def test_remote_code_needs_explicit_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "openvla",
                                                      "auto_map": {"AutoConfig": "x.Y"}}))
    with pytest.raises(RemoteCodeRefusedError, match="trust_remote_code"):
        check_remote_code(str(tmp_path), trust_remote_code=False)
    check_remote_code(str(tmp_path), trust_remote_code=True)  # allowed when asked for
    with pytest.raises(CheckpointError, match="transformers checkpoint"):
        load_policy(str(tmp_path))
