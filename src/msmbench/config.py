"""Configuration: YAML that rejects duplicate keys, validated against one JSON Schema.

The schema (workflow/schemas/config.schema.yaml) is checked when the workflow loads and again by
every CLI command for the section it receives, so a typo fails fast with the key and the allowed
values named. Duplicate keys are an error: the released configs wrote the mask ratio twice and YAML
silently kept the last one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"{node.start_mark.name}: duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                              f"(first at line {seen[key] + 1}); YAML would silently keep the last value")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None


def load_schema() -> dict:
    return load_yaml(SCHEMA_PATH)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return f"{where}: {error.message}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    return f"{where}: {error.message}"


def validate(config: dict, schema: dict | None = None, source: str = "config") -> dict:
    """Validate and fill defaults; returns a new dict. Raises ConfigError naming the key."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(validator_cls, schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    return config


def section_schema(name: str) -> dict:
    """The schema of one top-level section, with the shared $defs, for CLI-side validation."""
    schema = load_schema()
    sub = dict(schema["properties"][name])
    sub["$defs"] = schema.get("$defs", {})
    return sub


def validate_section(name: str, value: Any) -> Any:
    return validate(value, section_schema(name), source=f"settings[{name}]")


def load_config(path: str | Path) -> dict:
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return validate(raw, source=str(path))


def _local_ref(root: dict, ref: str) -> Any:
    """The part of `root` that a local JSON pointer ("#/$defs/name") names; the schema uses no other refs."""
    if not ref.startswith("#/"):
        raise ConfigError(f"schema: only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _with_defaults(validator_cls, root: dict):
    """A validator that also fills `default` values of object properties (as snakemake's validate)."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "$ref" in sub and "default" not in sub:
                    sub = _local_ref(root, sub["$ref"])  # a section's default lives in $defs
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def parse_settings(text: str) -> Any:
    """CLI settings: a JSON string, or @path to a JSON/YAML file."""
    if text.startswith("@"):
        return load_yaml(text[1:])
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--settings is not valid JSON ({e})") from None
