"""Config loading and validation: duplicate keys, unknown keys and bad values name the key."""

import json
from pathlib import Path

import pytest

from msmbench.config import ConfigError, load_config, load_yaml, parse_settings, validate, validate_section

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["default", "ci", "paper"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / f"{name}.yaml")
    assert cfg["pretrain"]["base_lr"] > 0 and cfg["probe"]["protocol"] in ("paper", "hear")


def test_paper_config_matches_the_paper():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    assert len(cfg["data"]["tasks"]) == 10 and cfg["probe"]["seeds"] == 10
    assert cfg["models"]["sizes"] == ["tiny", "small", "base"]
    assert cfg["pretrain"]["batch_size"] == 1024 and cfg["pretrain"]["epochs"] == 100
    assert cfg["probe"]["overrides"] == {}  # the unmodified paper protocol


def test_duplicate_keys_are_rejected(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("models:\n  objective: ssast\n  objective: mae\n")
    with pytest.raises(ConfigError, match="duplicate key 'objective'"):
        load_yaml(f)


def test_unknown_key_names_allowed_keys():
    with pytest.raises(ConfigError, match="allowed keys: .*epochs"):
        validate({"data": {"source": "synthetic", "tasks": ["pitch"]},
                  "models": {"backbones": ["transformer"], "sizes": ["cpu"]}, "pretrain": {"epoch": 3}})


def test_bad_enum_names_allowed_values():
    with pytest.raises(ConfigError, match=r"models\.objective: 'byol' is not allowed; allowed values: .*'mae'"):
        validate({"data": {"source": "synthetic", "tasks": ["pitch"]},
                  "models": {"backbones": ["transformer"], "sizes": ["cpu"], "objective": "byol"}})


def test_defaults_are_filled():
    cfg = validate({"data": {"source": "synthetic", "tasks": ["pitch"]},
                    "models": {"backbones": ["transformer"], "sizes": ["cpu"]}})
    assert cfg["seed"] == 0 and cfg["pretrain"]["batch_size"] == 1024 and cfg["data"]["pretrain"]["corpus"] == "synthetic"


def test_cli_settings_are_validated_too():
    assert validate_section("probe", parse_settings(json.dumps({"seeds": 2})))["protocol"] == "paper"
    with pytest.raises(ConfigError, match="settings\\[probe\\]"):
        validate_section("probe", {"seeds": 0})
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_settings("{oops")


def test_section_defaults_come_from_local_refs_only():
    from msmbench.config import _local_ref

    schema = {"$defs": {"a/b": {"default": 1}, "x": {"default": {"k": 2}}}}
    assert _local_ref(schema, "#/$defs/x") == {"default": {"k": 2}}
    assert _local_ref(schema, "#/$defs/a~1b") == {"default": 1}  # JSON pointer escapes
    with pytest.raises(ConfigError, match="only local"):
        _local_ref(schema, "other.yaml#/x")
