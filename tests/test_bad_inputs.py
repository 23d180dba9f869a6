"""The bad-input table (``scripts/bad_inputs.py``, issue #22): its quick rows run the real ``tatlas``
command in a subprocess, and every one must be refused with exit status 2 and one line on stderr
starting ``error:``, no traceback. The full table (slow rows and the server's) is rerun by the
script itself into docs/reliability.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "scripts" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # its dataclasses look their module up there
_spec.loader.exec_module(bad_inputs)

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-inputs")


@pytest.mark.slow
@pytest.mark.parametrize("row", [r for r in bad_inputs._rows() if r.fast], ids=lambda r: r.name)
def test_quick_bad_input_is_refused_in_one_error_line(row, work):
    result = bad_inputs.run_row(row, work, timeout=240)
    assert result.status == 2, result
    assert result.message.startswith("error:") and result.ok, result


def test_the_table_is_written_between_its_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(bad_inputs, "DOC", tmp_path / "reliability.md")
    (tmp_path / "reliability.md").write_text("# Reliability\n\nbefore\n")
    rows = [bad_inputs.Result("a | b", "tatlas x", 2, "error: one", True),
            bad_inputs.Result("c", "tatlas y", 1, "Traceback", False)]
    bad_inputs.write_doc(bad_inputs.table(rows), "cmd")
    bad_inputs.write_doc(bad_inputs.table(rows[:1]), "cmd")  # a rerun replaces the table, keeps the rest
    text = (tmp_path / "reliability.md").read_text()
    assert text.count(bad_inputs.START) == 1 and text.startswith("# Reliability\n\nbefore\n")
    assert "| a \\| b | `tatlas x` | 2 | error: one | ok |" in text and "Traceback" not in text
    assert "FAIL" in bad_inputs.table(rows)
