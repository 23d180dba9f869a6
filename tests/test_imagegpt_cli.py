"""`tatlas imagegpt complete` end to end on a saved tiny model and real image files."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app

runner = CliRunner()


def test_complete_writes_a_grid(tmp_path):
    model = tatlas.save(tatlas.create("imagegpt", "tiny"), tmp_path / "igpt.safetensors")
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((20, 30)) * 255).astype("uint8"), "L").save(img)
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["imagegpt", "complete", str(img), "--out", str(out), "--model", str(model),
                              "--samples", "2", "--top-k", "4"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.stat().st_size > 0
    assert "kept" in res.output and "note:" in res.output  # grayscale + resize reported
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    res = runner.invoke(app, ["imagegpt", "complete", str(bad), "--out", str(out), "--model", str(model)])
    assert res.exit_code == 2 and "bad.png" in res.output and "Traceback" not in res.output
