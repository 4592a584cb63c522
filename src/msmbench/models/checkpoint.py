"""Model specs, building, and checkpoints (safetensors weights + a JSON spec).

A *model spec* is the JSON-serialisable recipe of a model: backbone name and size, the resolved
backbone config, the objective, the input grid and the front end. Checkpoints store it beside the
weights, so loading never depends on the current config files (nanoGPT's `model_args`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from msmbench.audio.frontend import FrontendConfig
from msmbench.io import atomic_path, read_json, write_json
from msmbench.models.objectives import MaskedSpectrogramModel, ObjectiveConfig, objective_config, paper_parameter_count
from msmbench.models.registry import backbone_config, backbone_spec

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def model_spec(backbone: str, size: str, objective: str = "ssast-official", mask_ratio: float | None = None,
               options: dict | None = None, frames: int = 200) -> dict:
    """Resolve a (backbone, size, objective) choice into a complete, serialisable spec."""
    cfg = backbone_config(backbone, size, **(options or {}))
    obj = objective_config(objective, **({} if mask_ratio is None else {"mask_ratio": mask_ratio}))
    return {
        "backbone": backbone,
        "size": size,
        "backbone_config": dataclasses.asdict(cfg),
        "objective": objective,
        "objective_config": dataclasses.asdict(obj),
        "frames": frames,
        "frontend": FrontendConfig().to_dict(),
    }


def build_model(spec: dict) -> MaskedSpectrogramModel:
    bspec = backbone_spec(spec["backbone"])
    cfg = bspec.config_cls(**spec["backbone_config"])
    obj = ObjectiveConfig(**spec["objective_config"])
    return MaskedSpectrogramModel(spec["backbone"], cfg, obj, frames=spec["frames"], bins=spec["frontend"]["n_mels"])


def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    model = getattr(model, "module", model)  # DistributedDataParallel too
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, spec: dict, extra: dict | None = None) -> None:
    """Write model.safetensors then model.json (the JSON last: its presence marks a complete checkpoint)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(_state_dict(model), str(tmp), metadata={"format": "msmbench-v1"})
    base = getattr(getattr(model, "_orig_mod", model), "module", getattr(model, "_orig_mod", model))
    record = {"spec": spec, "parameters": paper_parameter_count(base), **(extra or {})}
    write_json(out_dir / SPEC, record)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MaskedSpectrogramModel, dict]:
    """Load a model from a checkpoint directory (or its model.json / model.safetensors). Returns (model, record)."""
    path = Path(path)
    ckpt_dir = path if path.is_dir() else path.parent
    if not (ckpt_dir / SPEC).exists() or not (ckpt_dir / WEIGHTS).exists():
        raise FileNotFoundError(f"{ckpt_dir}: not a msmbench checkpoint (needs {SPEC} and {WEIGHTS})")
    record = read_json(ckpt_dir / SPEC)
    model = build_model(record["spec"])
    try:
        state = load_file(str(ckpt_dir / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{ckpt_dir / WEIGHTS}: cannot read weights ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt_dir / WEIGHTS}: weights do not match the spec in {SPEC} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), record


def spec_summary(spec: dict[str, Any]) -> str:
    return f"{spec['backbone']}-{spec['size']} ({spec['objective']})"
