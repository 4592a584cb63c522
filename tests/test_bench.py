"""The GPU benchmarks' bookkeeping (runs without a GPU): failures become records, not crashes."""

import json
import runpy
from pathlib import Path

import pytest
import torch

from msmbench.bench import _measured, format_record, mfu


def test_measured_records_ok_oom_and_error():
    base = {"backbone": "mamba", "size": "base", "tokens": 251, "batch": 8}
    assert _measured(base, lambda: {"train_step_ms": 1.0}) == {**base, "status": "ok", "train_step_ms": 1.0}

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB\nmore detail")

    def broken():
        raise RuntimeError("triton compile failed")

    rec = _measured(base, oom)
    assert rec["status"] == "oom" and rec["error"] == "CUDA out of memory. Tried to allocate 4.00 GiB"
    rec = _measured(base, broken)
    assert rec["status"] == "error" and "triton compile failed" in rec["error"]
    assert format_record(rec).rstrip().endswith("ERROR")


def test_mfu():
    assert mfu(flops=35e12, step_ms=100.0, peak_tflops=700.0) == pytest.approx(0.5)


@pytest.mark.parametrize("script", ["pretrain_step", "gelu_backward"])
def test_gpu_benchmark_scripts_skip_cleanly_without_cuda(script, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / f"{script}.py"))["main"]
    assert main([]) == 0
    assert "skipped: needs CUDA" in capsys.readouterr().out


def test_scaling_script_passes_backbone_options(monkeypatch, tmp_path):
    """`scaling.py --options` reaches the study for each point, and each point's records are written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    main = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "scaling.py"))["main"]
    calls = []

    def fake_study(backbones, size, tokens, batch, tokens_per_step, options, repeats, log):
        calls.append((backbones, tokens, options, repeats))
        return [{"backbone": backbones[0], "tokens": tokens[0], "status": "ok"}]

    monkeypatch.setitem(main.__globals__, "scaling_study", fake_study)
    monkeypatch.setitem(main.__globals__, "machine_info", lambda: {"gpu": "test"})
    out = tmp_path / "scaling.json"
    assert main(["--backbones", "mamba", "--tokens", "251", "1001", "--repeats", "2", "--out", str(out),
                 "--options", '{"mamba": {"kernel": "mamba_ssm"}}']) == 0
    assert calls == [(["mamba"], [n], {"mamba": {"kernel": "mamba_ssm"}}, 2) for n in (251, 1001)]
    records = json.loads(out.read_text())
    assert [r["tokens"] for r in records] == [251, 1001] and records[0]["machine"] == {"gpu": "test"}
