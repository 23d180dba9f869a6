"""`tatlas demo` runs several demos side by side, each in a process of its own with its share of the
cores (tatlas/demo/processes.py): rows in the order asked, a demo that raises or whose process dies
becomes a failure row while the others finish, each process's output lands in its log."""

from __future__ import annotations

import json
import os
import re

import _demo_fakes
import pytest
import torch
from typer.testing import CliRunner

import tatlas.demo as demo_module
from tatlas.cli.main import app
from tatlas.demo import processes, run_demos


def _register(monkeypatch, **runs):
    monkeypatch.setattr(demo_module, "demos", lambda: dict(runs))


def test_demos_side_by_side_each_in_a_process_of_its_own(tmp_path, monkeypatch):
    _register(monkeypatch, alpha=_demo_fakes.ok, beta=_demo_fakes.boom, gamma=_demo_fakes.dies,
              delta=_demo_fakes.ok, epsilon=lambda options: _demo_fakes.ok(options))  # a closure stays here
    seen, plans = [], []
    results = run_demos([], tmp_path, seed=7, quick=True, jobs=2, on_plan=lambda *p: plans.append(p),
                        on_result=lambda r: seen.append(len(json.loads((tmp_path / "results.json").read_text()))))
    assert plans == [(2, max(1, processes.cpu_count() // 2))]
    assert [r.system for r in results] == ["alpha", "beta", "delta", "epsilon", "gamma"]  # the order asked
    assert seen == [1, 2, 3, 4, 5]  # the report is rewritten after each demo
    by = {r.system: r for r in results}
    for name in ("alpha", "delta"):
        assert by[name].details["pid"] != os.getpid() and by[name].details["threads"] == plans[0][1]
        assert by[name].details["quick"] == 1.0 and by[name].details["seed"] == 7.0
        log = (tmp_path / name / "log.txt").read_text().splitlines()
        assert log[0] == f"training {name}" and re.fullmatch(rf"{name}: \d+ s, peak RSS \d+\.\d\d GiB", log[1]), log
        assert (tmp_path / name / "artifact.txt").read_text() == name
    assert by["alpha"].details["pid"] != by["delta"].details["pid"]
    assert by["epsilon"].details["pid"] == os.getpid()  # not picklable: run here
    assert by["beta"].error == "RuntimeError: beta broke"
    assert "Traceback" in (tmp_path / "beta" / "error.txt").read_text()
    assert by["gamma"].error == "the demo's process died (exit status 3); its output is in gamma/log.txt"
    assert (tmp_path / "gamma" / "log.txt").read_text() == "about to die\n"
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["system"] for r in rows] == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert [bool(r.get("failed")) for r in rows] == [False, True, False, False, True]


def test_one_process_runs_them_here_in_order(tmp_path, monkeypatch):
    _register(monkeypatch, alpha=_demo_fakes.ok, beta=_demo_fakes.ok)
    plans = []
    results = run_demos(["beta", "alpha"], tmp_path, jobs=1, on_plan=lambda *p: plans.append(p))
    assert plans == [(1, torch.get_num_threads())]
    assert [r.system for r in results] == ["beta", "alpha"]
    assert all(r.details["pid"] == os.getpid() for r in results)
    assert not (tmp_path / "alpha" / "log.txt").exists()  # output went to this process's own

    _register(monkeypatch, alpha=_demo_fakes.ok, beta=lambda options: _demo_fakes.ok(options))
    plans.clear()
    results = run_demos([], tmp_path / "one-apart", jobs=2, on_plan=lambda *p: plans.append(p))
    assert plans == [(1, torch.get_num_threads())]  # only one could go apart: no process for it alone
    assert all(r.details["pid"] == os.getpid() for r in results)


def test_plan_shares_the_cores_and_minds_memory(monkeypatch):
    monkeypatch.setattr(processes, "cpu_count", lambda: 8)
    monkeypatch.setattr(processes, "_available_memory", lambda: 64e9)
    assert processes.plan(11) == (8, 1)
    assert processes.plan(3) == (3, 2)  # fewer demos than cores: more threads each
    assert processes.plan(11, jobs=2) == (2, 4)
    assert processes.plan(11, threads=3) == (8, 3)
    monkeypatch.setattr(processes, "_available_memory", lambda: 4e9)
    assert processes.plan(11) == (2, 4)  # 1.5 GB a demo
    monkeypatch.setattr(processes, "_available_memory", lambda: 1e9)
    assert processes.plan(11) == (1, 8)
    monkeypatch.setattr(processes, "_available_memory", lambda: None)
    assert processes.plan(11) == (8, 1)


def test_fixed_threads_come_from_the_environment(monkeypatch):
    from tatlas.nn.threads import environment_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("TATLAS_THREADS", "auto")
    assert environment_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert environment_threads() == 3
    monkeypatch.setenv("TATLAS_THREADS", "2")
    assert environment_threads() == 2


def test_bad_jobs_and_bad_thread_settings_are_one_line_errors(tmp_path, monkeypatch):
    _register(monkeypatch, alpha=_demo_fakes.ok)
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--jobs", "0", "--out", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 2 and res.output.strip() == "error: jobs: expected at least 1 process, got 0", res.output
    before = torch.get_num_threads()
    try:
        for value in ("x", "0", "-1"):
            monkeypatch.setenv("TATLAS_THREADS", value)
            res = runner.invoke(app, ["demo", "--out", str(tmp_path)], terminal_width=200)
            assert res.exit_code == 2, res.output
            assert res.output.strip() == f"error: TATLAS_THREADS: expected a positive whole number or 'auto', got {value!r}"
        monkeypatch.setenv("TATLAS_THREADS", "1")
        for value in ("x", "-1"):
            monkeypatch.setenv("TATLAS_SPIN", value)
            res = runner.invoke(app, ["demo", "--out", str(tmp_path)], terminal_width=200)
            assert res.exit_code == 2, res.output
            want = f"error: TATLAS_SPIN: expected a whole number of spins or 'default', got {value!r}"
            assert res.output.strip() == want
        monkeypatch.delenv("TATLAS_SPIN")
        res = runner.invoke(app, ["demo", "--jobs", "1", "--out", str(tmp_path)], terminal_width=200)
        assert res.exit_code == 0 and torch.get_num_threads() == 1, res.output
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_cli_tells_the_split_and_the_logs(tmp_path, monkeypatch, jobs):
    _register(monkeypatch, alpha=_demo_fakes.ok, beta=_demo_fakes.ok)
    res = CliRunner().invoke(app, ["demo", "--jobs", str(jobs), "--out", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    said = f"2 demos at a time, {max(1, processes.cpu_count() // 2)} thread"
    assert (said in res.output) == (jobs == 2), res.output
    assert "alpha: beats its baseline" in res.output and "beta: beats its baseline" in res.output
