# Config validation and the names every rule uses. No rules here.
import json
import os
import re

from msmbench.config import load_yaml, validate

# Reject duplicate keys in the config files (YAML would silently keep the last), then validate the
# merged config against workflow/schemas/config.schema.yaml and fill its defaults.
for _path in workflow.configfiles:
    load_yaml(_path)
config.update(
    validate(config, source=", ".join(map(str, workflow.configfiles)) or "config")
)

DATA = config["data"]
TASKS = DATA["tasks"]
SEED = config["seed"]
OBJECTIVE = config["models"]["objective"]
BASELINES = config["report"]["baselines"]
RES = config["resources"]
CORPUS = DATA["pretrain"]["corpus"]

# Model ids: <backbone>-<size>-<objective> for pretrained models, <backbone>-<size>-init for the
# randomly initialised encoders, and "logmel" for the log-mel baseline.
PAIRS = [
    (b, s) for b in config["models"]["backbones"] for s in config["models"]["sizes"]
]
PRETRAINED = [f"{b}-{s}-{OBJECTIVE}" for b, s in PAIRS]
INITIAL = [f"{b}-{s}-init" for b, s in PAIRS] if "random_init" in BASELINES else []
EMBEDDERS = PRETRAINED + INITIAL + (["logmel"] if "logmel" in BASELINES else [])
FIGURES = ["task_scores", "overall_vs_params", "pretrain_loss"] + [
    f"reconstruction_{m}" for m in PRETRAINED
]


def launcher(gpus):
    """torchrun for several GPUs (DistributedDataParallel), the plain entry point otherwise."""
    if gpus > 1:
        return f"torchrun --standalone --nproc-per-node={gpus} -m msmbench.cli"
    return "msmbench"


def model_choice(model):
    """The --model JSON of a model id: backbone, size, objective and per-backbone options."""
    for b, s in PAIRS:
        if model in (f"{b}-{s}-{OBJECTIVE}", f"{b}-{s}-init"):
            return {
                "backbone": b,
                "size": s,
                "objective": OBJECTIVE,
                "mask_ratio": config["models"]["mask_ratio"],
                "options": config["models"]["options"].get(b, {}),
            }
    raise ValueError(f"unknown model id {model!r}")


DISPLAY = {
    "transformer": "Transformer",
    "mamba": "Mamba",
    "mamba-bi": "Mamba-bi",
    "xlstm": "xLSTM",
    "xlstm-slstm": "xLSTM-sLSTM",
    "cpu": "CPU",
}


def display_name(backbone, size):
    """Table label, e.g. xLSTM-Tiny; unknown (user-registered) names are capitalised."""
    return f"{DISPLAY.get(backbone, backbone.capitalize())}-{DISPLAY.get(size, size.capitalize())}"


def model_info(embedder):
    """Metadata copied into every score file, so tables need nothing but the scores."""
    if embedder == "logmel":
        return {
            "model": "logmel",
            "label": "Log-mel (mean)",
            "kind": "baseline",
            "backbone": None,
            "size": None,
            "objective": None,
        }
    choice = model_choice(embedder)
    initial = embedder.endswith("-init")
    info_checkpoint = checkpoint_dir(embedder)
    label = display_name(choice["backbone"], choice["size"]) + (
        " (random init)" if initial else ""
    )
    return {
        "model": embedder,
        "label": label,
        "kind": "random_init" if initial else "pretrained",
        "backbone": choice["backbone"],
        "size": choice["size"],
        "objective": None if initial else OBJECTIVE,
        "checkpoint": info_checkpoint,
    }


def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def checkpoint_dir(embedder):
    if embedder in PRETRAINED:
        return f"results/models/{embedder}"
    return f"results/init/{embedder}"


def embedder_checkpoint(wildcards):
    """The checkpoint files an embedder needs (none for the log-mel baseline)."""
    if wildcards.embedder == "logmel":
        return []
    root = checkpoint_dir(wildcards.embedder)
    return [f"{root}/model.safetensors", f"{root}/model.json"]


def pretrain_sources():
    """Audio that features are computed from: the generated corpus, or the config's folders and file lists."""
    if CORPUS == "synthetic":
        return ["data/pretrain/synthetic/files.csv"]
    return DATA["pretrain"]["paths"]


def generated_pretrain_sources(wildcards):
    """Inputs the DAG makes itself; external audio (AudioSet) is not an input, so a dry run plans without it."""
    return pretrain_sources() if CORPUS == "synthetic" else []


def final_outputs():
    outputs = ["paper/tables/results.md", "paper/tables/numbers.tex"]
    outputs += expand("figures/{name}.pdf", name=FIGURES)
    if config["report"]["build_pdf"]:
        outputs.append("paper/main.pdf")
    return outputs
