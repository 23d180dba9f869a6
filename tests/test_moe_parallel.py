"""Expert parallelism on CPU (gloo, 2 and 4 processes under torchrun): the sharded MoE layer's
outputs and gradients equal the one-process layer's (same weights, same tokens), for top-k,
DeepSeek-V3 (groups, shared expert), Switch (capacity drops), Qwen2-MoE's gated shared expert, and a
router that leaves every rank but one without work; uneven all-to-all splits throughout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "_moe_scripts" / "ep_check.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_equals_one_process(world, tmp_path):
    result = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(SCRIPT), str(result)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    report = json.loads(result.read_text())
    assert report["world"] == world
    for case in ("mixtral-topk", "deepseek-shared", "switch-drops", "qwen-gated-shared", "all-to-expert-0"):
        assert report[case]["max_diff"] <= 1e-5, (case, report[case])
        print(f"world {world} {case}: max abs diff {report[case]['max_diff']:.2e}")
    assert report["switch-drops"]["dropped"] > 0
    assert report["all-to-expert-0"]["local_load"][1:] == [0] * (2 * world - 1)
    assert f"multiple of the expert-parallel world size {world}" in report["indivisible"]
