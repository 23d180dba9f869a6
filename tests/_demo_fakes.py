"""Demos for the tests of demos side by side (tests/test_demo_processes.py): module-level, so they
can be sent to a process of their own. Each one's system is its report folder's name."""

from __future__ import annotations

import os

import torch

from tatlas.demo import DemoResult


def ok(options):
    print(f"training {options.out_dir.name}", flush=True)
    (options.out_dir / "artifact.txt").write_text(options.out_dir.name)
    return DemoResult(system=options.out_dir.name, claim="c", metric="m", value=1.0, baseline="b", baseline_value=0.5,
                      details={"pid": float(os.getpid()), "threads": float(torch.get_num_threads()),
                               "quick": float(options.quick), "seed": float(options.seed)})


def boom(options):
    raise RuntimeError(f"{options.out_dir.name} broke")


def dies(options):
    print("about to die", flush=True)
    os._exit(3)
