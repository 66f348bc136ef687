"""Configuration: one typed config from defaults, env files and the environment; a bad value
names the variable and the expected form."""

from __future__ import annotations

import os

import pytest

from fleet import config
from fleet.config import ConfigError, load


def test_defaults_load_and_every_setting_is_documented():
    cfg = load({})
    for s in config.SETTINGS:
        assert s.help, s.env
        assert s.env in config.markdown_table()
    assert cfg.SHARD_COUNT == 1 and cfg.shards == [0]
    assert cfg.FLEET_ROLES == ["ingester", "fetcher", "indexer"]


@pytest.mark.parametrize("env,var,form", [
    ({"SHARD_COUNT": "eight"}, "SHARD_COUNT", "an integer >= 1"),
    ({"DRAIN_TIMEOUT_S": "-1"}, "DRAIN_TIMEOUT_S", "a number >= 0.1"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL", "redis://"),
    ({"INDEXER_RESOLVE_HANDLES": "maybe"}, "INDEXER_RESOLVE_HANDLES", "true/false"),
    ({"SHARD_COUNT": "4", "SHARDS": "2-9"}, "SHARDS", "0-3,6"),
    ({"FLEET_EXTRA_ROLES": "sleeper"}, "FLEET_EXTRA_ROLES", "name=module:function"),
    ({"DATABASE_SCHEMA": "bsky; drop"}, "DATABASE_SCHEMA", "SQL identifier"),
    ({"INDEXER_PLAN_CACHE_MODE": "generic"}, "INDEXER_PLAN_CACHE_MODE", "force_generic_plan, auto, force_custom_plan"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "debug, info, warning, error"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "kv, json"),
])
def test_invalid_value_names_the_variable_and_the_expected_form(env, var, form):
    with pytest.raises(ConfigError) as e:
        load(env)
    msg = str(e.value)
    assert msg.startswith(var) and form in msg
    assert "\n" not in msg


def test_a_secret_is_not_echoed_in_the_error():
    with pytest.raises(ConfigError) as e:
        load({"DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(e.value) and "DATABASE_URL" in str(e.value)


def test_environment_overrides_env_files_which_override_defaults(tmp_path):
    a = tmp_path / "a.env"
    b = tmp_path / "b.env"
    a.write_text("# comment\nSHARD_COUNT=8\nexport SHARDS='0-3'\nINDEXER_BATCH_SIZE=100\n")
    b.write_text('INDEXER_BATCH_SIZE="200"\n')
    cfg = load({"SHARDS": "4-7"}, [str(a), str(b)])
    assert cfg.SHARD_COUNT == 8 and cfg.shards == [4, 5, 6, 7] and cfg.INDEXER_BATCH_SIZE == 200
    assert cfg.sources["SHARDS"] == "environment" and cfg.sources["INDEXER_BATCH_SIZE"] == str(b)
    assert cfg.sources["DB_POOL_SIZE"] == "default"
    cfg2 = load({"ENV_FILE": str(a)})
    assert cfg2.shards == [0, 1, 2, 3]


def test_env_file_with_a_password_must_not_be_readable_by_others(tmp_path):
    f = tmp_path / "indexer@1.env"
    f.write_text("DATABASE_URL=postgresql://bsky:s3cret@db/bsky\n")
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError) as e:
        load({}, [str(f)])
    assert "chmod 600" in str(e.value) and "s3cret" not in str(e.value)
    os.chmod(f, 0o600)
    cfg = load({}, [str(f)])
    assert cfg.redacted()["DATABASE_URL"] == "postgresql://bsky:***@db/bsky"


def test_missing_or_malformed_env_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.env"):
        load({}, [str(tmp_path / "nope.env")])
    bad = tmp_path / "bad.env"
    bad.write_text("SHARD_COUNT 8\n")
    with pytest.raises(ConfigError, match="bad.env:1: expected KEY=VALUE"):
        load({}, [str(bad)])


def test_unknown_variables_in_the_environment_are_ignored():
    assert load({"PATH": "/bin", "SOMETHING_ELSE": "x"}).SHARD_COUNT == 1
