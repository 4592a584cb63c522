"""The msmbench command line: one entry point per workflow stage.

Each command takes explicit inputs, outputs and settings (the rule's params as JSON), validates the
settings against the config schema, calls one library function, and writes a provenance record
beside its output. `msmbench <command> --help` documents each; the Snakemake rules call them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from msmbench.config import ConfigError, parse_settings, validate_section

log = logging.getLogger("msmbench")


def _settings(text: str | None, section: str | None = None):
    value = parse_settings(text) if text else {}
    return validate_section(section, value) if section else value


def _threads(n: int | None) -> None:
    from msmbench.runtime import configure_cpu

    configure_cpu(n)


# --- data -------------------------------------------------------------------------------------------
def cmd_synth_task(a: argparse.Namespace) -> None:
    from msmbench.data import synth
    from msmbench.provenance.record import now, write_record

    started = now()
    out = synth.generate_task(a.task, Path(a.out).parent, seed=a.seed, scale=a.scale)
    write_record(out, "synth_task", settings={"task": a.task, "seed": a.seed, "scale": a.scale}, seed=a.seed,
                 started=started)


def cmd_synth_pretrain(a: argparse.Namespace) -> None:
    from msmbench.data import synth
    from msmbench.provenance.record import now, write_record

    started = now()
    out = synth.generate_pretrain_corpus(a.out, seed=a.seed, n_clips=a.clips)
    # the record sits on files.csv (the rule's output), which lists every clip with its sha256
    write_record(out / "files.csv", "synth_pretrain", settings={"seed": a.seed, "clips": a.clips}, seed=a.seed, started=started)


def cmd_fetch(a: argparse.Namespace) -> None:
    from msmbench.data.fetch import fetch_task
    from msmbench.provenance.record import now, write_record

    started = now()
    hear = _settings(a.settings)
    out = fetch_task(a.task, Path(a.out).parent, source=hear["source"], manifest_path=hear["manifest"],
                     lock_path=hear["lock"])
    write_record(out, "fetch", settings=hear, started=started)


def cmd_features(a: argparse.Namespace) -> None:
    from msmbench.data.features import build_shards
    from msmbench.provenance.record import now, write_record

    started = now()
    meta = build_shards(a.sources, a.out, shard_clips=a.shard_clips, workers=a.workers, progress=not a.quiet,
                        skip_bad=a.skip_bad)
    write_record(meta, "features", inputs=a.sources, settings={"shard_clips": a.shard_clips, "skip_bad": a.skip_bad},
                 started=started)


def cmd_check_disjoint(a: argparse.Namespace) -> None:
    from msmbench.data.disjoint import check_disjoint
    from msmbench.provenance.record import now, write_record

    started = now()
    result = check_disjoint(a.features, a.tasks, a.out)
    write_record(a.out, "check_disjoint", inputs=[Path(a.features) / "meta.json", *a.tasks], started=started)
    print(f"disjoint: {result['pretraining_clips']} pretraining clips, {result['task_clips']} task clips, no overlap")


# --- models -----------------------------------------------------------------------------------------
def _spec_from_settings(model: dict) -> dict:
    from msmbench.models.checkpoint import model_spec

    return model_spec(model["backbone"], model["size"], model.get("objective", "ssast-official"),
                      model.get("mask_ratio"), model.get("options"), frames=model.get("frames", 200))


def cmd_pretrain(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_records
    from msmbench.train.pretrain import pretrain

    started = now()
    train = _settings(a.train, "pretrain")
    spec = _spec_from_settings(_settings(a.model))
    summary = pretrain(a.features, a.out, spec, train, seed=a.seed, device=a.device, threads=a.threads,
                       progress=not a.quiet)
    if (Path(a.out) / "model.json").exists():  # rank 0 of a distributed run writes the files
        write_records([Path(a.out) / n for n in ("model.safetensors", "model.json", "metrics.csv")], "pretrain",
                      inputs=[Path(a.features) / "meta.json"], settings={"model": spec, "pretrain": train},
                      seed=a.seed, started=started, extra=summary)


def cmd_init_model(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_records
    from msmbench.train.pretrain import initial_checkpoint

    started = now()
    spec = _spec_from_settings(_settings(a.model))
    initial_checkpoint(a.out, spec, seed=a.seed)
    write_records([Path(a.out) / n for n in ("model.safetensors", "model.json")], "init_model",
                  settings={"model": spec}, seed=a.seed, started=started)


def cmd_reconstruct(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_record
    from msmbench.train.reconstruct import reconstruct

    started = now()
    reconstruct(a.checkpoint, a.features, a.out, n_clips=a.clips, seed=a.seed)
    write_record(a.out, "reconstruct", inputs=[Path(a.checkpoint) / "model.safetensors", Path(a.features) / "meta.json"],
                 settings={"clips": a.clips}, seed=a.seed, started=started)


def cmd_models(a: argparse.Namespace) -> None:
    from msmbench.models.catalog import catalog

    rows = catalog()
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'backbone':<14}{'size':<7}{'params':>12}{'paper (M)':>11}  description")
    for r in rows:
        paper = f"{r['paper_params_m']:.1f}" if r["paper_params_m"] else "-"
        print(f"{r['backbone']:<14}{r['size']:<7}{r['params']:>12,}{paper:>11}  {r['description']}")


# --- embeddings and probes --------------------------------------------------------------------------
def cmd_embed(a: argparse.Namespace) -> None:
    from msmbench.embed.extract import embed_task
    from msmbench.embed.hear_api import LOGMEL, load_model
    from msmbench.provenance.record import now, write_record

    started = now()
    _threads(a.threads)
    embed = _settings(a.settings, "embed")
    model = load_model(a.model, token_order=embed["token_order"], device=a.device)
    info = embed_task(model, a.task_dir, a.out, batch_size=embed["batch_size"], progress=not a.quiet)
    inputs = [a.task_dir] + ([] if a.model == LOGMEL else [Path(a.model) / "model.safetensors"])
    write_record(a.out, "embed", inputs=inputs, settings={"embed": embed, "model": a.model}, started=started, extra=info)


def cmd_probe(a: argparse.Namespace) -> None:
    from msmbench.probe.evaluate import probe_task
    from msmbench.provenance.record import now, write_record

    started = now()
    _threads(a.threads)
    probe = _settings(a.settings, "probe")
    info = parse_settings(a.model_info) if a.model_info else {}
    result = probe_task(a.embeddings, a.task_dir, a.out, probe, info, base_seed=a.seed, device=a.device,
                        progress=not a.quiet)
    write_record(a.out, "probe", inputs=[a.embeddings, a.task_dir], settings={"probe": probe, "model": info},
                 seed=a.seed, started=started, extra={"mean": result["mean"], "ci95": result["ci95"]})


# --- report -----------------------------------------------------------------------------------------
def cmd_aggregate(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_records
    from msmbench.report.aggregate import aggregate

    started = now()
    aggregate(a.scores, a.out_long, a.out_summary)
    write_records([a.out_long, a.out_summary], "aggregate", inputs=a.scores, started=started)


def cmd_table(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_records
    from msmbench.report.render import render_tables

    started = now()
    outputs = render_tables(a.summary, a.out_dir, a.numbers, tasks=a.tasks)
    write_records(outputs, "table", inputs=[a.summary], settings={"tasks": a.tasks}, started=started)


def cmd_figure(a: argparse.Namespace) -> None:
    from msmbench.provenance.record import now, write_records
    from msmbench.report.render import render_figure

    started = now()
    outputs = render_figure(a.name, a.inputs, a.out, tasks=a.tasks)
    write_records(outputs, "figure", inputs=a.inputs, settings={"figure": a.name}, started=started)


def cmd_summary(a: argparse.Namespace) -> None:
    from msmbench.report.run_summary import run_summary

    print(run_summary(a.benchmarks, a.results, a.figures, a.paper))


def cmd_audit(a: argparse.Namespace) -> None:
    from msmbench.io import write_json, write_text
    from msmbench.provenance.audit import audit_all, cell_lineage, final_outputs, format_lineage, to_prov_json

    outputs = final_outputs(a.root) if a.all else a.outputs
    if not outputs:
        raise ValueError("nothing to audit: name outputs, or use --all after a run")
    report = audit_all(outputs)
    lines = []
    for out in map(str, outputs):
        lines += format_lineage(report, out) + [""]
    if a.model or a.task:
        if not (a.model and a.task):
            raise ValueError("--model and --task go together (they name one table cell)")
        cell = cell_lineage(report, a.model, a.task)
        lines += ["table cell:"] + [f"  {k}: {v}" for k, v in cell.items()] + [""]
    verdict = (f"OK: {len(report.records)} records, every hash verified down to the raw data" if report.ok else
               f"FAILED: {len(report.findings)} problem(s):\n" + "\n".join(f"  {f.path}: {f.problem}" for f in report.findings))
    text = "\n".join(lines + [verdict]) + "\n"
    print(text, end="")
    if a.report:
        write_text(a.report, text)
    if a.prov_json:
        write_json(a.prov_json, to_prov_json(report))
    if not report.ok:
        raise AuditFailed(f"audit failed: {report.findings[0].path}: {report.findings[0].problem}")


def cmd_sync_mtimes(a: argparse.Namespace) -> None:
    from msmbench.provenance.audit import sync_mtimes

    counts = sync_mtimes(a.root)
    print(f"{counts['fresh']} outputs match their records (ordered after their inputs); "
          f"{counts['stale']} do not (marked out of date, Snakemake will rerun them)")


class AuditFailed(RuntimeError):
    pass


def cmd_bench(a: argparse.Namespace) -> None:
    import torch

    from msmbench.bench import HEADER, machine_info, scaling_study
    from msmbench.io import write_json, write_text

    if not torch.cuda.is_available():
        raise RuntimeError("the scaling study needs a CUDA GPU (results in BENCHMARKS.md were measured on an H100)")
    bench = _settings(a.settings, "bench")
    lines = [HEADER]
    records = scaling_study(a.backbones, bench["sizes"][0], bench["tokens"], bench["batch"], bench["tokens_per_step"],
                            log=lambda line: (lines.append(line), print(line, flush=True)))
    write_json(a.out, [{**r, "machine": machine_info()} for r in records])
    write_text(a.table, "\n".join(lines) + "\n")


def cmd_validate_config(a: argparse.Namespace) -> None:
    from msmbench.config import load_config

    for path in a.configs:
        load_config(path)
        print(f"{path}: valid")


# --- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msmbench", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    def common(sp: argparse.ArgumentParser, device: bool = False, seed: bool = False) -> None:
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if device:
            sp.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
            sp.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
        if seed:
            sp.add_argument("--seed", type=int, default=0)

    sp = cmd("synth-task", cmd_synth_task, "generate one synthetic task in HEAR layout")
    sp.add_argument("task", help="synthetic task name (see README)")
    sp.add_argument("--out", required=True, help="task directory to create, e.g. data/tasks/percussion")
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--scale", type=float, default=1.0, help="multiplies the clips per class")

    sp = cmd("synth-pretrain", cmd_synth_pretrain, "generate the synthetic unlabelled pretraining corpus")
    sp.add_argument("--out", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--clips", type=int, required=True)

    sp = cmd("fetch", cmd_fetch, "download, verify, extract and resample one HEAR 2021 task")
    sp.add_argument("task", help="HEAR task directory name, e.g. esc50-v2.0.0-full")
    sp.add_argument("--out", required=True, help="task directory to create, e.g. data/tasks/esc50-v2.0.0-full")
    sp.add_argument("--settings", required=True, help="the config's data.hear section (JSON or @file)")

    sp = cmd("features", cmd_features, "compute log-mel shards of a pretraining corpus")
    sp.add_argument("--sources", nargs="+", required=True, help="folders or .txt/.csv file lists of audio")
    sp.add_argument("--out", required=True, help="shard directory (meta.json is written last)")
    sp.add_argument("--shard-clips", type=int, default=50000)
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--skip-bad", action=argparse.BooleanOptionalAction, default=False,
                    help="leave out unreadable audio files (listed in meta.json) instead of stopping")
    common(sp)

    sp = cmd("check-disjoint", cmd_check_disjoint,
             "fail if any task clip is also a pretraining clip (sha256 of the files)")
    sp.add_argument("--features", required=True, help="log-mel shard directory (its files.tsv lists the sources)")
    sp.add_argument("--tasks", nargs="+", required=True, help="task directories")
    sp.add_argument("--out", required=True, help="JSON report")

    sp = cmd("pretrain", cmd_pretrain, "pretrain one masked spectrogram model (resumes from train_state.pt)")
    sp.add_argument("--features", required=True, help="log-mel shard directory")
    sp.add_argument("--out", required=True, help="checkpoint directory")
    sp.add_argument("--model", required=True, help='{"backbone","size","objective","mask_ratio","options"} JSON')
    sp.add_argument("--train", required=True, help="the config's pretrain section (JSON or @file)")
    common(sp, device=True, seed=True)

    sp = cmd("init-model", cmd_init_model, "write a randomly initialised checkpoint (the random_init baseline)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--model", required=True)
    common(sp, seed=True)

    sp = cmd("reconstruct", cmd_reconstruct, "masked reconstructions of a few pretraining clips (for figures)")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--features", required=True)
    sp.add_argument("--out", required=True, help=".npz output")
    sp.add_argument("--clips", type=int, default=3)
    common(sp, seed=True)

    sp = cmd("models", cmd_models, "list every registered backbone and size with its parameter count")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = cmd("embed", cmd_embed, "scene embeddings of one task through the HEAR API")
    sp.add_argument("--model", required=True, help="checkpoint directory, or 'logmel' for the baseline")
    sp.add_argument("--task-dir", required=True)
    sp.add_argument("--out", required=True, help=".npz output")
    sp.add_argument("--settings", default=None, help="the config's embed section (JSON or @file)")
    common(sp, device=True)

    sp = cmd("probe", cmd_probe, "train and evaluate probes on one task's embeddings over several seeds")
    sp.add_argument("--embeddings", required=True)
    sp.add_argument("--task-dir", required=True)
    sp.add_argument("--out", required=True, help="score .json output")
    sp.add_argument("--settings", default=None, help="the config's probe section (JSON or @file)")
    sp.add_argument("--model-info", default=None, help="model metadata copied into the score file (JSON)")
    common(sp, device=True, seed=True)

    sp = cmd("aggregate", cmd_aggregate, "collect score files into long and summary CSVs")
    sp.add_argument("--scores", nargs="+", required=True)
    sp.add_argument("--out-long", required=True)
    sp.add_argument("--out-summary", required=True)

    sp = cmd("table", cmd_table, "render the results table (CSV, Markdown, LaTeX) and headline-number macros")
    sp.add_argument("--summary", required=True)
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("--numbers", required=True, help="LaTeX macros output (paper/tables/numbers.tex)")
    sp.add_argument("--tasks", nargs="*", default=None, help="task column order")

    sp = cmd("figure", cmd_figure, "render one figure (PNG + PDF)")
    sp.add_argument("name", help="task_scores | overall_vs_params | pretrain_loss | reconstruction | scaling")
    sp.add_argument("--inputs", nargs="+", required=True)
    sp.add_argument("--out", required=True, help="output stem: writes <out>.png and <out>.pdf")
    sp.add_argument("--tasks", nargs="*", default=None)

    sp = cmd("summary", cmd_summary, "print what ran, how long it took and where the results are")
    sp.add_argument("--benchmarks", default="logs/benchmarks")
    sp.add_argument("--results", default="results")
    sp.add_argument("--figures", default="figures")
    sp.add_argument("--paper", default="paper")

    sp = cmd("audit", cmd_audit, "print the lineage of outputs and re-verify every hash down to the raw data")
    sp.add_argument("outputs", nargs="*", help="output files or directories with a .prov.json record")
    sp.add_argument("--all", action="store_true", help="the paper's tables, macros and figures")
    sp.add_argument("--root", default=".", help="workflow directory (for --all)")
    sp.add_argument("--model", help="with --task: the lineage of one table cell")
    sp.add_argument("--task")
    sp.add_argument("--report", help="also write the printed report to this file")
    sp.add_argument("--prov-json", help="write the lineage as a W3C PROV-JSON document")

    sp = cmd("sync-mtimes", cmd_sync_mtimes,
             "after `dvc pull`: order outputs' modification times by their provenance records (content decides)")
    sp.add_argument("--root", default=".")

    sp = cmd("bench", cmd_bench, "GPU scaling study: train-step time, memory and inference throughput vs length, "
             "each step holding the same number of tokens (bench.tokens_per_step) unless bench.batch is set")
    sp.add_argument("--backbones", nargs="+", required=True)
    sp.add_argument("--settings", default=None, help="the config's bench section (JSON or @file)")
    sp.add_argument("--out", required=True, help="JSON records (msmbench figure scaling plots them)")
    sp.add_argument("--table", required=True, help="text table")

    sp = cmd("validate-config", cmd_validate_config, "check config files against the schema")
    sp.add_argument("configs", nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as e:  # AuditFailed is a RuntimeError
        log.error("%s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    log.info("%s done in %.1f s", args.command, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
