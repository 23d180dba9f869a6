"""`tatlas fold` end to end: an A3M written here, a saved tiny Evoformer, the files it writes, and
one-line errors for bad alignments."""

import numpy as np
import pytest
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.data.proteins import protein_families
from tatlas.models.evoformer.msa_io import msa_from_arrays, read_msa, write_a3m

runner = CliRunner()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tatlas.save(tatlas.create("evoformer", "tiny"), tmp_path_factory.mktemp("m") / "evo.safetensors")


def test_fold_writes_contacts_distogram_and_trace(tmp_path, model_path):
    family = protein_families(1, length=20, depth=24)[0]
    a3m = tmp_path / "fam.a3m"
    write_a3m(msa_from_arrays(family.msa, family.deletion_matrix), a3m)
    assert read_msa(a3m).sequences[0] == family.sequence
    out = tmp_path / "out"
    res = runner.invoke(app, ["fold", str(a3m), "--model", str(model_path), "--out", str(out), "--recycles", "1",
                              "--chunk-size", "4"])
    assert res.exit_code == 0, res.output
    assert "20 residues, 24 sequences" in res.output
    pred = np.load(out / "prediction.npz")
    probs, dist = pred["contact_probs"], pred["distogram_probs"]
    assert probs.shape == (20, 20) and np.all((probs >= 0) & (probs <= 1))
    assert dist.shape[:2] == (20, 20) and np.allclose(dist.sum(-1), 1, atol=1e-5)
    assert pred["ca"].shape == (20, 3) and np.isfinite(pred["ca"]).all()
    assert str(pred["sequence"]) == family.sequence
    for name in ("contacts.png", "distogram.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    atoms = [line for line in (out / "ca.pdb").read_text().splitlines() if line.startswith("ATOM")]
    assert len(atoms) == 20 and all(line[12:16].strip() == "CA" for line in atoms)
    # chunked and unchunked predictions agree
    res = runner.invoke(app, ["fold", str(a3m), "--model", str(model_path), "--out", str(tmp_path / "o2"),
                              "--recycles", "1"])
    assert res.exit_code == 0, res.output
    assert np.allclose(np.load(tmp_path / "o2" / "prediction.npz")["contact_probs"], probs, atol=1e-5)


@pytest.mark.parametrize("name, text, expected", [
    ("empty.a3m", "", "empty"),
    ("letters.a3m", ">q\nACDEFG\n>s\nAC!EFG\n", "line 4"),
    ("ragged.fasta", ">q\nACDEFG\n>s\nACD\n", "line 3: sequence 's' is 3 columns wide, expected 6"),
])
def test_fold_refuses_bad_alignments_in_one_line(tmp_path, model_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    res = runner.invoke(app, ["fold", str(path), "--model", str(model_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert name in res.output and expected in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_fold_refuses_bad_options_and_missing_model(tmp_path, model_path):
    a3m = tmp_path / "q.a3m"
    a3m.write_text(">q\nACDEFGHIK\n")
    res = runner.invoke(app, ["fold", str(a3m), "--model", str(model_path), "--out", str(tmp_path / "o"),
                              "--chunk-size", "0"])
    assert res.exit_code == 2 and "--chunk-size" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["fold", str(a3m), "--model", str(tmp_path / "none.safetensors"), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 2 and "none.safetensors" in res.output and "Traceback" not in res.output


def test_demo_quick_reports_contacts_beside_the_coevolution_baseline(tmp_path):
    from tatlas.demo.evoformer import run
    from tatlas.demo.spec import DemoOptions

    result = run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    d = result.details
    assert result.system == "evoformer" and 0 <= result.value <= 1
    assert result.baseline_value == d["top_L5_long_covariance"] and 0 <= result.baseline_value <= 1
    assert d["test_families"] == 3 and d["steps"] == 4
    assert 0 <= d["lddt_ca_evoformer"] <= 1 and 0 <= d["lddt_ca_mds_of_covariance"] <= 1
    assert (tmp_path / result.artifacts["contacts"]).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
