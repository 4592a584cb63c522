"""Scratch: pretrain_step rows with Inductor's coordinate-descent tuning of its Triton kernels.

    python benchmarks/results/pretrain_step_coordinate_descent.py --backbones transformer --only "bf16 residual, compiled, CUDA" --repeats 20 --out OUT.json
"""
import runpy, sys
import torch._inductor.config as inductor_config
inductor_config.coordinate_descent_tuning = True
sys.argv = ["benchmarks/pretrain_step.py"] + sys.argv[1:]
runpy.run_path("benchmarks/pretrain_step.py", run_name="__main__")
