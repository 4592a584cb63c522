"""Backbones register by name; a config names them.

A backbone is an `nn.Module` built from one config dataclass. Its contract (what the objectives rely on):
- `__init__(cfg)` builds and initialises every parameter; `cfg.dim` is the token width;
- `forward(x)` maps tokens `x: [B, L, dim]` (cls first, positions already added) to `[B, L, dim]`,
  final norm included. It must accept any L (the MAE objective feeds only visible tokens).
Sizes are named presets of that dataclass (tiny/small/base from SPEC.md, plus `cpu` for the default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    cls: type[nn.Module]
    config_cls: type
    sizes: dict[str, Any]
    description: str = ""
    paper_params: dict[str, float] = field(default_factory=dict)  # SPEC.md estimates, in millions


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, config_cls: type, sizes: dict[str, Any], description: str = "",
                      paper_params: dict[str, float] | None = None) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = BackboneSpec(name, cls, config_cls, dict(sizes), description, dict(paper_params or {}))
        return cls
    return wrap


def _load_builtin() -> None:
    # Importing the modules runs their @register_backbone decorators. Optional kernels inside them are
    # imported lazily, so this works on a CPU-only machine.
    from msmbench.models import mamba, transformer, xlstm  # noqa: F401


def backbone_spec(name: str) -> BackboneSpec:
    _load_builtin()
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[name]


def backbone_names() -> list[str]:
    _load_builtin()
    return sorted(_BACKBONES)


def backbone_config(name: str, size: str, **overrides: Any) -> Any:
    spec = backbone_spec(name)
    if size not in spec.sizes:
        raise KeyError(f"backbone {name!r} has no size {size!r}; sizes: {', '.join(spec.sizes)}")
    cfg = spec.sizes[size]
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = set(overrides) - fields
    if unknown:
        raise KeyError(f"unknown {name} option(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def build_backbone(name: str, cfg: Any) -> nn.Module:
    return backbone_spec(name).cls(cfg)
