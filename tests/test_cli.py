"""The ``tatlas`` command, through its real entry point."""

import subprocess
import sys

from typer.testing import CliRunner

from tatlas.cli.main import app

runner = CliRunner()


def test_list_shows_systems_presets_and_counts():
    res = runner.invoke(app, ["list"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "llm" in res.output and "Llama-3.1-8B" in res.output and "8.03B" in res.output


def test_explain_traces_a_real_forward():
    res = runner.invoke(app, ["explain", "llm"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "layers.0.attn" in res.output and "[2, 12, 259]" in res.output and "parameters:" in res.output


def test_explain_bad_names_are_one_line_errors():
    res = runner.invoke(app, ["explain", "nope"], terminal_width=200)
    assert res.exit_code == 2
    assert "unknown system 'nope'; registered systems:" in res.output
    res = runner.invoke(app, ["explain", "llm", "--preset", "huge"], terminal_width=200)
    assert res.exit_code == 2 and "valid presets: tiny" in res.output
    assert "Traceback" not in res.output


def test_demo_unknown_system(tmp_path):
    res = runner.invoke(app, ["demo", "nope", "--out", str(tmp_path)], terminal_width=200)
    assert res.exit_code in (0, 2)
    assert "no demo" in res.output or "no demos are registered" in res.output


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "tatlas.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "explain" in out.stdout


def test_demo_quick_writes_a_report(tmp_path):
    """The README's main job, shortened: demos train, compare with their baseline, write a report."""
    import json

    res = runner.invoke(app, ["demo", "llm", "moe", "--quick", "--out", str(tmp_path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["system"] for r in results] == ["llm", "moe"]
    for r in results:
        assert r["value"] == r["value"] and r["baseline_value"] == r["baseline_value"]  # finite, not NaN
    assert (tmp_path / "README.md").is_file() and (tmp_path / "moe" / "expert_load.png").is_file()
    assert (tmp_path / "llm" / "sample.txt").read_text().startswith("The import statement")


# ------------------------------------------------------------------------------------------ failures


def _fake_demos(monkeypatch, **behaviours):
    """Replace the registered demos by fakes: ``name="ok"`` beats its baseline, ``"miss"`` does not,
    ``"boom"`` raises."""
    import tatlas.demo as demo_module

    def make(name, how):
        def run(options):
            if how == "boom":
                raise RuntimeError(f"{name} broke\nwith a second line")
            (options.out_dir / "artifact.txt").write_text(name)
            return demo_module.DemoResult(system=name, claim="c", metric="m", value=1.0 if how == "ok" else 0.0,
                                          baseline="b", baseline_value=0.5)
        return run

    monkeypatch.setattr(demo_module, "demos", lambda: {n: make(n, how) for n, how in behaviours.items()})


def test_a_failing_demo_becomes_a_row_and_the_others_still_run(tmp_path, monkeypatch):
    import json

    _fake_demos(monkeypatch, alpha="ok", beta="boom", gamma="ok")
    seen = []
    from tatlas.demo import run_demos

    run_demos([], tmp_path, on_result=lambda r: seen.append(json.loads((tmp_path / "results.json").read_text())))
    assert [len(rows) for rows in seen] == [1, 2, 3]  # the report is written after every demo
    rows = seen[-1]
    assert [r["system"] for r in rows] == ["alpha", "beta", "gamma"]
    assert rows[1]["failed"] and rows[1]["error"] == "RuntimeError: beta broke with a second line"
    assert "Traceback" in (tmp_path / "beta" / "error.txt").read_text()
    assert (tmp_path / "gamma" / "artifact.txt").read_text() == "gamma"
    assert "| beta | failed: RuntimeError: beta broke with a second line |" in (tmp_path / "README.md").read_text()

    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "cli")], terminal_width=200)
    assert res.exit_code == 1, res.output
    assert "failed: beta" in res.output and "gamma" in res.output


def test_demo_exit_status_tells_a_miss_from_a_failure(tmp_path, monkeypatch):
    _fake_demos(monkeypatch, alpha="ok", beta="miss")
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "a")], terminal_width=200)
    assert res.exit_code == 3 and "missed the baseline: beta" in res.output, res.output
    res = runner.invoke(app, ["demo", "alpha", "--out", str(tmp_path / "b")], terminal_width=200)
    assert res.exit_code == 0, res.output


def _explain_raising(monkeypatch, error):
    import tatlas.explain

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(tatlas.explain, "explain", boom)


def test_expected_errors_are_one_line_and_exit_2(monkeypatch):
    cases = [
        (ValueError("bad value:\n  expected 3, got 4"), "error: bad value: expected 3, got 4"),
        (FileNotFoundError(2, "No such file or directory", "x.wav"), "error: [Errno 2] No such file or directory: 'x.wav'"),
        (ModuleNotFoundError("No module named 'faster_whisper'", name="faster_whisper"),
         "error: this needs the package 'faster_whisper', which is not installed"),
        (MemoryError(), "error: not enough memory for what was asked"),
    ]
    for error, line in cases:
        _explain_raising(monkeypatch, error)
        res = runner.invoke(app, ["explain", "llm"], terminal_width=200)
        assert res.exit_code == 2, res.output
        assert res.output.startswith(line) and len(res.output.strip().splitlines()) == 1, res.output


def test_debug_shows_the_full_traceback_of_an_expected_error(monkeypatch):
    _explain_raising(monkeypatch, ValueError("bad value"))
    for args, env in ((["--debug", "explain", "llm"], {}), (["explain", "llm"], {"TATLAS_DEBUG": "1"})):
        res = runner.invoke(app, args, env=env)
        assert res.exit_code == 1 and isinstance(res.exception, ValueError), res.output


def test_unexpected_errors_show_a_short_traceback_without_locals():
    code = ("import sys, tatlas.explain\n"
            "def boom(*a, **k):\n    secret = 'a local value'\n    raise RuntimeError('an internal defect')\n"
            "tatlas.explain.explain = boom\n"
            "from tatlas.cli.main import main\n"
            "sys.argv = ['tatlas', *sys.argv[1:]]\nmain()\n")
    short = subprocess.run([sys.executable, "-c", code, "explain", "llm"], capture_output=True, text=True,
                           env={**__import__("os").environ, "COLUMNS": "200"})
    assert short.returncode == 1
    assert "RuntimeError: an internal defect" in short.stderr and "a local value" not in short.stderr
    assert "click" not in short.stderr  # typer/click frames left out
    full = subprocess.run([sys.executable, "-c", code, "--debug", "explain", "llm"], capture_output=True, text=True)
    assert full.returncode == 1 and full.stderr.startswith("Traceback (most recent call last)")
    assert "click" in full.stderr and "RuntimeError: an internal defect" in full.stderr
