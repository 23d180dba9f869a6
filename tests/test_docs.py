"""The documentation site (``tatlas docs``): its figures come from their records (RESULTS.md's block,
the parity tests, the code), its examples run during the build and fail it when broken, its API
reference covers every public object. The pages in a real browser: tests/test_docs_browser.py."""

from __future__ import annotations

import inspect
import re
import shutil

import pytest
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.explain.site import (
    SiteOptions,
    apiref,
    build_site,
    default_root,
    page_preset,
)
from tatlas.explain.site import examples as site_examples
from tatlas.explain.site.figures import parity, recorded, sections
from tatlas.explain.site.html import esc, markdown, slug

ROOT = default_root()
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SYSTEMS = ("decision_transformer", "imagegpt")  # two small systems keep the build short


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    report = build_site(SiteOptions(out=out, systems=SYSTEMS, pictures=()))
    return out, report


def test_every_registered_system_has_a_row_whose_figures_are_in_their_sections():
    rows = recorded(RESULTS)
    assert set(rows) == set(tatlas.systems())
    parts = sections(RESULTS.read_text())
    for r in rows.values():
        assert r.ratio in parts[r.benchmark_section], r.system


def test_a_figure_missing_from_its_section_stops_the_build(tmp_path):
    text = RESULTS.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| clip |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    tampered = row.replace(f"| {cells[7]} |", "| 9.99× |")
    (tmp_path / "RESULTS.md").write_text(text.replace(row, tampered))
    with pytest.raises(ValueError, match=r"clip: the figure '9.99×' is not in section"):
        recorded(tmp_path / "RESULTS.md")


def test_parity_is_read_from_the_tests(tmp_path):
    (tmp_path / "test_parity_foo.py").write_text(
        '"""Foo equals ``Bar`` (tiny random).\n"""\nLOOSE, TIGHT = 1e-3, 1e-6\n\n'
        "def test_a():\n    assert_close(a, b, atol=LOOSE)\n\n"
        "def test_b():\n    assert_close(a, b, atol=TIGHT)\n    torch.testing.assert_close(a, b, atol=1e-5)\n")
    (tmp_path / "test_parity_foobar.py").write_text('"""Another system."""\ndef test_c():\n    pass\n')
    p = parity(tmp_path, "foo")
    assert (p.tests, p.atol, p.files) == (2, 1e-3, ("test_parity_foo.py",))
    assert p.reference == "Foo equals ``Bar``"
    assert parity(tmp_path, "baz") is None
    real = parity(ROOT / "tests", "clip")
    assert real.tests > 0 and 0 < real.atol <= 1e-4  # DESIGN: float32 logits within 1e-4


def test_index_shows_the_recorded_figures_and_the_parity_read_from_the_tests(site):
    out, report = site
    index = (out / "index.html").read_text()
    rows = recorded(RESULTS)
    for name in SYSTEMS:
        r, p = rows[name], parity(ROOT / "tests", name)
        row = index[index.index(f'href="systems/{name}.html"'):].split("</tr>")[0]
        assert esc(r.figure) in row and esc(r.baseline_figure) in row and esc(r.ratio) in row
        assert f"≤ {p.atol:g}" in row and f"({p.tests} tests)" in row
    assert "clip" not in re.findall(r'href="systems/(\w+)\.html"', index)
    assert {p.name for p in report.pages} == {"index.html", "architecture.html", "results.html", "api.html",
                                              *(f"{n}.html" for n in SYSTEMS)}


def test_system_page_records_the_real_output_of_its_examples(site):
    out, _ = site
    for name in SYSTEMS:
        html = (out / "systems" / f"{name}.html").read_text()
        params = sum(p.numel() for p in tatlas.create(name, page_preset(tatlas.get_system(name))).parameters())
        assert f"parameters: {params:,}" in html
        diff = float(re.search(r"reloaded, max abs diff: ([0-9.e+-]+)", html).group(1))
        assert diff <= 1e-6  # the same weights, re-read (float order may vary with the thread count)
        assert esc(f"$ tatlas explain {name} --preset {page_preset(tatlas.get_system(name))}") in html
        assert f"parameters: {params:,}; forward FLOPs" in html  # the command's own output
        assert (out / "systems" / name / "diagram.svg").read_text().lstrip().startswith("<?xml")
        assert esc(tatlas.get_system(name).question) in html
        assert "Pictures were not rendered in this build" in html


def test_api_reference_covers_every_public_object(site):
    out, _ = site
    html = (out / "api.html").read_text()
    _, items = apiref.render()
    anchors = [e.anchor for e in items]
    assert len(anchors) == len(set(anchors)), "two public objects share an anchor"
    for module in apiref.MODULES:
        mod = __import__(module, fromlist=["__all__"])
        for name in (n for n in mod.__all__ if not n.startswith("__")):
            assert f'id="{slug(f"{module}.{name}")}"' in html, (module, name)
    first = inspect.getdoc(tatlas.create).split("\n\n")[0]
    assert markdown(first) in html  # the docstring itself, rendered


def test_a_broken_example_fails_the_build_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(site_examples.OUTPUT, "imagegpt", "out.no_such_field")
    with pytest.raises(site_examples.ExampleError, match=r"^the Python example of 'imagegpt' failed: AttributeError"):
        build_site(SiteOptions(out=tmp_path / "site", systems=("imagegpt",), pictures=()))
    with pytest.raises(site_examples.ExampleError, match=r"exited 2: error: unknown preset 'nope'"):
        site_examples._run(["explain", "imagegpt", "--preset", "nope"], head=0)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["docs", "--out", str(tmp_path / "s"), "--system", "nope"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: unknown system 'nope'; registered systems: {', '.join(sorted(tatlas.systems()))}"]
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "docs", root / "docs")
    result = runner.invoke(app, ["docs", "--out", str(tmp_path / "s"), "--root", str(root), "--fast"])
    assert result.exit_code == 2 and "benchmarks/RESULTS.md is missing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_markdown_reader():
    html = markdown("# Title `x`\n\nSome **bold** and [a link](other.html) and [repo](src/x.py).\n\n"
                    "| a | b |\n|---|---|\n| 1 | `2` |\n\n- one\n  more\n- two\n\n```\n<raw>\n```\n")
    assert '<h1 id="title-x">Title <code>x</code></h1>' in html
    assert '<strong>bold</strong>' in html and '<a href="other.html">a link</a>' in html and "repo" in html
    assert "src/x.py" not in html
    assert "<td>1</td><td><code>2</code></td>" in html
    assert "<li>one more</li><li>two</li>" in html and "&lt;raw&gt;" in html
