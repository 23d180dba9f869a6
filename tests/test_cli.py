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
