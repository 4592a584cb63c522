"""GPU benchmarks of the training step and of inference, and the sequence-length scaling study.

Used by `benchmarks/pretrain_step.py` (one step at the paper's setting), `benchmarks/scaling.py` and the
workflow's `bench` target. Times are CUDA-event medians after warm-up; peak memory is
torch.cuda.max_memory_allocated over the timed steps; model FLOPs come from torch's FlopCounterMode
(matmuls, convolutions and attention; Mamba's and xLSTM's scans are not counted, so their MFU is a
lower bound); MFU is against the bf16 matmul rate measured on the same card in the same run.
"""

from __future__ import annotations

import datetime
import platform
import shlex
import statistics
import sys
from typing import Callable

import torch

from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer


def machine_info() -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "host": platform.node()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    return info


def command_line() -> str:
    """The command that is running, quoted so that it can be pasted back into a shell (a record's "command")."""
    return shlex.join(sys.argv)


def cuda_time_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def matmul_peak_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16, trials: int = 5) -> float:
    """Dense matmul rate on random data (the MFU denominator), TFLOP/s: the best of `trials` timings, since
    one timing on an H100 has ranged from 592 (under sustained load) to 791 TFLOP/s (clocks, power;
    BENCHMARKS.md) and a low denominator would flatter MFU."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = min(cuda_time_ms(lambda: a @ b, warmup=5, repeats=20) for _ in range(trials))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def mfu(flops: float, step_ms: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: the step's FLOPs per second over the measured matmul rate."""
    return flops / (step_ms / 1e3) / (peak_tflops * 1e12)


def frames_for_tokens(tokens: int, bins: int = 80) -> int:
    """Spectrogram frames whose patch grid has `tokens` tokens (cls included): 251 -> 200 frames."""
    patches = tokens - 1
    per_step = bins // 16
    if patches % per_step:
        raise ValueError(f"{tokens} tokens is not 1 + a multiple of {per_step}")
    return patches // per_step * 4


def step_flops(model, batch: torch.Tensor, amp_dtype: torch.dtype = torch.bfloat16) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=amp_dtype):
        loss, _, _ = model(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _measured(base: dict, measure: Callable[[], dict]) -> dict:
    """base + measure()'s fields with status "ok"; out of memory -> status "oom", any other failure (a kernel
    that does not build or run) -> status "error": both are results to report, not crashes."""
    try:
        return {**base, "status": "ok", **measure()}
    except torch.OutOfMemoryError as e:
        return {**base, "status": "oom", "error": str(e).split("\n")[0][:200]}
    except Exception as e:  # noqa: BLE001
        text = repr(e)  # compiler errors put the cause at the end: keep both ends
        return {**base, "status": "error", "error": text if len(text) <= 900 else f"{text[:300]} ... {text[-600:]}"}
    finally:
        torch.cuda.empty_cache()


def train_step(backbone: str, size: str, batch: int, tokens: int = 251, options: dict | None = None,
               compile: bool | str = False, repeats: int = 10, peak_tflops: float | None = None,
               amp_dtype: torch.dtype = torch.bfloat16) -> dict:
    """One pretraining step (forward, backward, fused AdamW) under autocast (bf16, or fp16 with a gradient
    scaler as the released code trains): time, memory, clips/s, MFU. `compile`: True, or a torch.compile
    mode ("reduce-overhead" replays the step's kernels as CUDA graphs). FLOPs are counted on the uncompiled
    model (compiling does not change them)."""
    frames = frames_for_tokens(tokens)
    base = {"backbone": backbone, "size": size, "tokens": tokens, "seconds_audio": frames / 100, "batch": batch,
            "compile": compile, "options": options or {}, "amp_dtype": str(amp_dtype).removeprefix("torch."),
            "device": torch.cuda.get_device_name()}

    def measure() -> dict:
        torch.manual_seed(0)
        model = build_model(model_spec(backbone, size, options=options, frames=frames)).cuda()
        optimizer = make_optimizer(model, 1e-4, 0.05, (0.9, 0.95))
        x = torch.randn(batch, frames, 80, device="cuda")
        flops = step_flops(model, x, amp_dtype)
        run = torch.compile(model, mode=compile if isinstance(compile, str) else None) if compile else model
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        def step():
            if compile == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
            with torch.autocast("cuda", dtype=amp_dtype):
                loss, _, _ = run(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_time_ms(step, warmup=2, repeats=repeats)
        rec = {"train_step_ms": ms, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
               "clips_per_s": batch / (ms / 1e3), "flops_per_step": flops}
        if peak_tflops:
            rec["mfu"] = mfu(flops, ms, peak_tflops)
        return rec

    return _measured(base, measure)


@torch.no_grad()
def inference(backbone: str, size: str, batch: int, tokens: int = 251, options: dict | None = None,
              repeats: int = 10) -> dict:
    """Embedding throughput: forward_features under bf16 autocast, clips/s and peak memory."""
    frames = frames_for_tokens(tokens)

    def measure() -> dict:
        model = build_model(model_spec(backbone, size, options=options, frames=frames)).cuda().eval()
        x = torch.randn(batch, frames, 80, device="cuda")

        def fwd():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model.forward_features(x)

        torch.cuda.reset_peak_memory_stats()
        ms = cuda_time_ms(fwd, warmup=2, repeats=repeats)
        return {"infer_ms": ms, "infer_clips_per_s": batch / (ms / 1e3),
                "infer_peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}

    return _measured({"backbone": backbone, "size": size, "tokens": tokens, "batch": batch}, measure)


PAPER_TOKENS_PER_STEP = 256 * 251  # the paper's step: 256 clips of 251 tokens


def batch_for(tokens: int, batch: int | None = None, tokens_per_step: int = PAPER_TOKENS_PER_STEP) -> int:
    """The scaling study's batch at a sequence length: `batch` when given, else as many sequences as fit
    the token budget (at least one), so each step sees the same number of tokens at every length."""
    return batch if batch else max(1, tokens_per_step // tokens)


def scaling_study(backbones: list[str], size: str, tokens: list[int], batch: int | None = None,
                  tokens_per_step: int = PAPER_TOKENS_PER_STEP, options: dict | None = None, repeats: int = 5,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Training-step time/memory and inference throughput against sequence length; OOM points kept.
    With a fixed token budget per step (the default), a backbone whose cost is linear in length has a
    flat step time and attention's grows with length, so the crossover reads straight off the plot."""
    records = []
    for backbone in backbones:
        opts = (options or {}).get(backbone, {})
        for n in tokens:
            b = batch_for(n, batch, tokens_per_step)
            train = train_step(backbone, size, b, n, opts, repeats=repeats)
            infer = inference(backbone, size, b, n, opts, repeats=repeats)
            rec = {**train, **{k: v for k, v in infer.items() if k.startswith("infer")}}
            rec["status"] = train["status"] if train["status"] != "ok" else infer["status"]
            if not batch:
                rec["tokens_per_step"] = tokens_per_step
            records.append(rec)
            log(format_record(rec))
    return records


def format_record(r: dict) -> str:
    if r.get("status") != "ok" and "train_step_ms" not in r:
        return f"{r['backbone']:<12}{r['size']:<6}{r['tokens']:>7}{r['batch']:>6}   {r['status'].upper()}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
    infer = f"{r['infer_clips_per_s']:.0f}" if r.get("infer_clips_per_s") else "-"
    return (f"{r['backbone']:<12}{r['size']:<6}{r['tokens']:>7}{r['batch']:>6}{r['train_step_ms']:>10.1f}"
            f"{r['clips_per_s']:>10.0f}{r['peak_mem_gib']:>9.2f}{mfu:>8}{infer:>10}")


HEADER = f"{'backbone':<12}{'size':<6}{'tokens':>7}{'batch':>6}{'step ms':>10}{'clips/s':>10}{'GiB':>9}{'MFU':>8}{'inf c/s':>10}"
