"""Each policy kind's build options are its own class from the kind registry: `apo-ros train
--policy.NAME` flags, YAML `policy:` keys and `TrainConfig(policy={...})` take the options as
given; the kind named by --init builds its class and refuses, in one line, an option it does not
take."""

import argparse

import pytest

from apo_ros.cli import build_parser
from apo_ros.config import choice_options
from apo_ros.errors import ConfigError
from apo_ros.policies.factory import POLICY_KINDS, policy_kinds
from apo_ros.policies.options import PolicyOptions, SmallOptions, StateOptions, VLAFastOptions
from apo_ros.training.config import TrainConfig
from apo_ros.training.policy_init import check_init


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_each_kind_builds_its_own_options_class():
    config = TrainConfig(policy={"hidden": 32, "layers": 2})
    options = config.policy_options("state")
    assert type(options) is StateOptions and options.hidden == 32 and options.layers == 2
    assert type(TrainConfig(policy={"hidden": 32}).policy_options("small")) is SmallOptions
    assert {name: PolicyOptions.get_choice_class(name) for name in POLICY_KINDS} == {
        name: kind.options for name, kind in POLICY_KINDS.items()}


@pytest.mark.parametrize("kind, option", [("small", "layers"), ("state", "image_size"),
                                          ("vla_bins", "hidden"), ("vla_fast", "n_bins")])
def test_an_option_the_kind_does_not_take_is_refused_naming_both(kind, option):
    # every option here belongs to some other kind: the config itself accepts it
    config = TrainConfig(policy={option: 2})
    with pytest.raises(ConfigError) as err:
        config.policy_options(kind)
    message = str(err.value)
    assert f"['{option}']" in message and f"the {kind} policy" in message and "\n" not in message


def test_an_option_no_kind_takes_is_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"policy: unknown option\(s\) \['hiden'\]"):
        TrainConfig(policy={"hiden": 32})


def test_a_kind_checks_its_own_values():
    with pytest.raises(ConfigError, match="decode must be one of"):
        TrainConfig(policy={"decode": "median"}).policy_options("small")
    with pytest.raises(ConfigError, match="chunk_size must be >= 1"):
        TrainConfig(policy={"chunk_size": 0}).policy_options("vla_fast")


def test_flags_are_typed_and_name_the_kinds_that_take_them():
    from apo_ros.training.cli import build_config

    args = _train_parser().parse_args(["--init", "small", "--out", "x", "--policy.hidden", "256",
                                       "--policy.decode", "mean", "--policy.channels", "[4, 8]"])
    config = build_config(args)
    assert config.policy == {"hidden": 256, "decode": "mean", "channels": [4, 8]}
    assert config.policy_options("small").build_options() == {"hidden": 256, "decode": "mean",
                                                              "channels": (4, 8)}
    helps = {a.dest.split(":", 1)[1]: a.help for a in _train_parser()._actions
             if a.dest.startswith("config_flag:policy.")}
    # one flag per option of any kind, from the registered classes (no list of its own)
    assert set(helps) == {f"policy.{o}" for k in policy_kinds() for o in choice_options(PolicyOptions, k)}
    assert helps["policy.layers"].startswith("state:")
    assert helps["policy.hidden"].startswith("small, state:")
    assert helps["policy.fast_scale"].startswith("vla_fast:")


def test_options_round_trip_through_the_saved_config():
    config = TrainConfig(policy={"cameras": ["front"], "lora_rank": 4})
    again = TrainConfig.from_dict(config.to_dict())
    assert again.policy == {"cameras": ["front"], "lora_rank": 4}
    built = again.policy_options("vla_fast")
    assert type(built) is VLAFastOptions
    assert built.build_options() == {"cameras": ("front",), "lora": {"r": 4, "alpha": 16, "dropout": 0.0,
                                                                      "target_modules": "all-linear"}}


def test_init_from_a_checkpoint_still_refuses_options_no_kind_takes_together(tmp_path):
    # layers (state) and image_size (small): no kind takes both
    with pytest.raises(ConfigError, match="not options of the small policy"):
        check_init(str(tmp_path), TrainConfig(policy={"layers": 2, "image_size": 16}))
