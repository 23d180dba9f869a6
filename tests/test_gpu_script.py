"""``benchmarks/gpu.py``, the one GPU script, kept from rotting: its CPU dry run (tiny shapes, every
row) runs to the end, writes its JSON and table, and every row produced its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_produces_every_row(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "gpu.py", "--dry-run", "--out", str(tmp_path)], cwd=ROOT / "benchmarks",
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = result["rows"]
    assert set(rows) == {"decode", "moe", "clip", "train", "whisper", "evoformer"}
    assert all("error" not in r and r["headline"] for r in rows.values()), rows
    # the same weights went through tatlas' converters: the outputs agree
    assert rows["clip"]["max_abs_image_embedding_diff"] < 1e-4
    assert rows["whisper"]["max_abs_logit_diff"] < 1e-3
    assert 0 < rows["decode"]["fraction_of_bound"]["tatlas"] < 1
    assert set(rows["moe"]["shapes"]) == {"mixtral-like", "deepseek-like"}
    table = (tmp_path / "gpu.md").read_text()
    assert all(f"| {name} |" in table for name in rows)


def test_gpu_script_refuses_unknown_rows_and_a_missing_gpu():
    proc = subprocess.run([sys.executable, "gpu.py", "--rows", "decode,nope", "--dry-run"], cwd=ROOT / "benchmarks",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown ['nope']" in proc.stderr
    if not __import__("torch").cuda.is_available():
        proc = subprocess.run([sys.executable, "gpu.py"], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode != 0 and "expected a CUDA device" in proc.stderr
