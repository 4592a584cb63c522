"""Every registered backbone and size with its parameter count (`msmbench models`)."""

from __future__ import annotations

import torch

from msmbench.models.checkpoint import build_model, model_spec
from msmbench.models.objectives import paper_parameter_count
from msmbench.models.registry import backbone_names, backbone_spec


def parameter_count(backbone: str, size: str, objective: str = "ssast-official") -> int:
    """Parameters as SPEC.md counts them (patch embedding, cls, blocks, final norm, SSAST head)."""
    with torch.device("meta"):  # shapes only: nothing allocated or initialised
        return paper_parameter_count(build_model(model_spec(backbone, size, objective)))


def catalog() -> list[dict]:
    rows = []
    for name in backbone_names():
        spec = backbone_spec(name)
        for size in spec.sizes:
            paper = spec.paper_params.get(size)
            rows.append({"backbone": name, "size": size, "params": parameter_count(name, size),
                         "paper_params_m": paper, "description": spec.description})
    return rows
