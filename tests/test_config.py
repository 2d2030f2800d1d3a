import dataclasses

import pytest

from learner.config import (
    CONFIGS_DIR,
    ConfigError,
    config_from_dict,
    load_config,
    parse_override,
    to_dict,
)

FAMILIES = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def test_every_family_has_the_five_variants_and_paper_values():
    assert set(FAMILIES) >= {"pointmass", "locomotion", "antmaze", "kitchen", "adroit"}
    for family in FAMILIES:
        for variant in ("wsrl", "cql", "iql", "sac"):
            config = load_config(family, variant)
            assert config.variant == variant
    wsrl = load_config("antmaze", "wsrl")
    assert wsrl.agent.critic_ensemble_size == 10 and wsrl.agent.critic_subsample_size == 2
    assert wsrl.agent.cql_lagrange and wsrl.agent.cql_target_action_gap == 0.8
    assert wsrl.finetune.warmup_steps == 5000 and wsrl.finetune.utd_ratio == 4
    assert wsrl.agent.actor_lr == 1e-4 and wsrl.agent.critic_lr == 3e-4 and wsrl.agent.temperature_lr == 1e-4
    assert wsrl.agent.tau == 5e-3 and wsrl.agent.discount == 0.99 and wsrl.agent.batch_size == 256
    assert load_config("antmaze", "iql").agent.iql_expectile == 0.9
    assert load_config("antmaze", "iql").agent.iql_awr_temperature == 10.0
    assert load_config("kitchen", "iql").agent.iql_expectile == 0.7
    assert load_config("adroit", "cql").agent.cql_alpha == 1.0
    assert load_config("kitchen", "cql").agent.cql_alpha == 5.0
    assert load_config("locomotion", "wsrl").pretrain.algorithm == "cql"
    assert load_config("antmaze", "sac").agent.critic_subsample_size == 1


def test_overrides_are_typed_and_nested():
    config = load_config("pointmass", "wsrl", ["agent.actor_lr=3e-4", "agent.critic_hidden_dims=[32,32]", "finetune.utd_ratio=2", "agent.backup_entropy=true"])
    assert config.agent.actor_lr == pytest.approx(3e-4)
    assert config.agent.critic_hidden_dims == (32, 32)
    assert config.finetune.utd_ratio == 2 and config.agent.backup_entropy is True
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("agent.discount=1.5", "'agent.discount': got 1.5, expected a number in (0, 1]"),
        ("agent.critic_subsample_size=11", "'agent.critic_subsample_size': got 11, expected an integer in [1, agent.critic_ensemble_size=10]"),
        ("agent.utd=4", "unknown config field 'agent.utd'"),
        ("finetune.utd_ratio=0", "'finetune.utd_ratio': got 0, expected an integer >= 1"),
        ("finetune.utd_ratio=two", "'finetune.utd_ratio': got 'two', expected an integer"),
        ("agent.max_target_backup=always", "expected one of 'none', 'sampled_actions', 'ensemble_max'"),
        ("agent.critic_matmul_dtype=float16", "'agent.critic_matmul_dtype': got 'float16', expected one of 'auto', 'float32', 'bfloat16'"),
        ("agent.critic_hidden_dims=256", "'agent.critic_hidden_dims': got 256, expected a list of an integer"),
        ("finetune.offline_mixing_ratio=1.0", "'finetune.offline_mixing_ratio': got 1.0, expected a number in [0, 1)"),
        ("agent.batch_size=true", "'agent.batch_size': got True, expected an integer"),
        ("noequals", "expected the form section.field=value"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("pointmass", "wsrl", [override])
    assert fragment in str(e.value)


def test_unknown_variant_and_family():
    with pytest.raises(ConfigError, match="'variant': 'redq' is not defined in antmaze.yaml or methods.yaml; expected one of"):
        load_config("antmaze", "redq")
    with pytest.raises(ConfigError, match="known families: .*antmaze"):
        load_config("nosuchfamily", "wsrl")


def test_round_trip_through_a_plain_dict():
    config = load_config("kitchen", "iql", ["seed=3"])
    assert config_from_dict(to_dict(config)) == config
    assert dataclasses.asdict(config)["agent"]["critic_hidden_dims"] == (512, 512, 512)
