"""The run report: sections from results only, offline page, relative links, escaping."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from deepprofile.errors import MissingFileError
from deepprofile.mapper.page import external_resources
from deepprofile.report import (
    SECTIONS,
    ReportContext,
    Section,
    Text,
    build_report,
    register_section,
)
from deepprofile.report import figures as F

SECTION_IDS = ("overview", "capture", "topology", "mapper", "spectral", "attribution")


def _results_only(run: Path, dest: Path, keep: tuple[str, ...] | None = None) -> Path:
    """Copy run.json, the results (all, or those named in ``keep``) and the mapper pages."""
    (dest / "results").mkdir(parents=True)
    shutil.copy(run / "run.json", dest / "run.json")
    for path in (run / "results").glob("*.json"):
        if keep is None or path.stem in keep:
            shutil.copy(path, dest / "results" / path.name)
    if keep is None:
        shutil.copytree(run / "mapper", dest / "mapper")
    return dest


@pytest.fixture(scope="module")
def full_report(report_runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("reports") / "nested" / "report.html"
    path = build_report(report_runs["a"], out, strict=True)
    return path, path.read_text()


def test_every_section_and_toc(full_report, parse_page):
    path, html = full_report
    page = parse_page(html)
    for sid in SECTION_IDS:
        assert sid in page.ids, f"section {sid} missing"
    # every table-of-contents link points at an element of the page, and every section
    # is listed in it
    assert page.toc_hrefs and all(h.startswith("#") for h in page.toc_hrefs)
    assert all(h[1:] in page.ids for h in page.toc_hrefs)
    assert {f"#{sid}" for sid in SECTION_IDS} <= set(page.toc_hrefs)
    assert len(page.ids) == len(set(page.ids)), "duplicate element ids"


def test_offline_single_plotly_copy(full_report, parse_page):
    from plotly.offline import get_plotlyjs

    _, html = full_report
    page = parse_page(html)
    assert external_resources(html) == []
    assert all("src" not in s for s in page.scripts), "no external script may be loaded"
    head = get_plotlyjs()[:200]
    assert html.count(head) == 1, "plotly.js must be embedded exactly once"
    # one plotly div per figure, each drawn by its own newPlot call, each with a caption
    assert len(page.plotly_divs) >= 15
    assert html.count("Plotly.newPlot(") == len(page.plotly_divs)
    # every figure and every image grid (attribution maps) has a caption
    assert html.count("<figcaption>") == len(page.plotly_divs) + html.count(
        '<figure class="fig wide images"')
    # scripts: plotly.js, one per figure, the page's own loader
    assert len(page.scripts) == len(page.plotly_divs) + 2


def test_mapper_links_relative_to_report(full_report, report_runs, parse_page):
    path, html = full_report
    page = parse_page(html)
    pages = [h for h in page.hrefs if h.endswith(".html")]
    assert len(pages) >= 2 and page.iframes
    for href in pages + page.iframes:
        assert not href.startswith(("/", "file:")), "links must be relative"
        target = (path.parent / unquote(href)).resolve()
        assert target.exists() and target.parent == (report_runs["a"] / "mapper").resolve()


def test_default_output_in_run_folder(report_runs, tmp_path):
    run = _results_only(report_runs["a"], tmp_path / "run")
    path = build_report(run)
    assert path == run / "report.html"
    assert 'href="mapper/layer3.html"' in path.read_text()


def test_sections_only_for_present_results(report_runs, tmp_path, parse_page):
    # no store, only the overview and capture statistics: nothing is recomputed
    run = _results_only(report_runs["a"], tmp_path / "run", keep=("capture",))
    html = build_report(run, strict=True).read_text()
    ids = parse_page(html).ids
    assert "overview" in ids and "capture" in ids
    for sid in ("topology", "mapper", "spectral", "attribution"):
        assert sid not in ids
    assert html.count("not run") == 4  # the overview lists the missing analyses


def test_full_report_without_store(report_runs, tmp_path, parse_page):
    run = _results_only(report_runs["a"], tmp_path / "run")
    assert not (run / "activations.zarr").exists()
    ids = parse_page(build_report(run, strict=True).read_text()).ids
    assert all(sid in ids for sid in SECTION_IDS)


def test_hostile_names_are_escaped(hostile_run, evil, parse_page):
    html = build_report(hostile_run, strict=True).read_text()
    page = parse_page(html)
    for raw in evil.values():
        assert raw not in html
    assert "alert(" in html, "the hostile names must appear in the page (escaped)"
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=" in html
    # no injected element: only plotly.js, the figures' scripts and the page's loader
    assert len(page.scripts) == len(page.plotly_divs) + 2
    assert not any(img.get("src") == "x" for img in page.images)
    # inside figure JSON the hostile strings are escaped text too
    assert "\\u003cscript\\u003ealert(" not in html or "&lt;" in html
    assert not re.search(r"</script>\s*<img", html)


def test_figure_fragments_cannot_end_their_script():
    import plotly.graph_objects as go

    hostile = "</script><script>alert(1)</script><!--"
    fig = go.Figure(go.Bar(x=[hostile, F.esc(hostile)], y=[1, 2]),
                    layout={"title": {"text": hostile}})
    html = F.render(fig, "f1")
    assert hostile not in html
    assert html.lower().count("<script") == html.lower().count("</script") == 1
    with pytest.raises(ValueError):
        F.check_script_safe("<script>var a = '</script>';</script>")
    with pytest.raises(ValueError):
        F.check_script_safe("<script>var a = '<!--';</script>")


def test_registry_is_extensible(report_runs, tmp_path, parse_page):
    def concepts_section(ctx: ReportContext) -> Section | None:
        data = ctx.result("concepts")
        if data is None:
            return None
        return Section(ctx.unique_id("concepts"), "Concepts",
                       blocks=[Text(f"{len(data['probes'])} probes")])

    registry = list(SECTIONS)
    register_section(concepts_section, after="mapper", registry=registry)
    register_section(concepts_section, registry=registry)  # no duplicate
    assert registry.count(concepts_section) == 1
    names = [b.__name__ for b in registry]
    assert names.index("concepts_section") == names.index("mapper_section") + 1
    run = _results_only(report_runs["a"], tmp_path / "run", keep=("capture",))
    html = build_report(run, sections=registry).read_text()
    assert "concepts" not in parse_page(html).ids  # absent results: no section
    (run / "results" / "concepts.json").write_text(json.dumps({"probes": [1, 2, 3]}))
    html = build_report(run, sections=registry).read_text()
    page = parse_page(html)
    assert "concepts" in page.ids and "#concepts" in page.toc_hrefs and "3 probes" in html
    assert concepts_section not in SECTIONS


def test_broken_results_give_a_note_or_raise(report_runs, tmp_path):
    run = _results_only(report_runs["a"], tmp_path / "run", keep=("capture", "topology"))
    (run / "results" / "topology.json").write_text(json.dumps({"layers": ["a"],
                                                               "clouds": 3}))
    with pytest.warns(UserWarning, match="topology section"):
        html = build_report(run).read_text()
    assert "could not be drawn" in html
    with pytest.raises(AttributeError):
        build_report(run, strict=True)
    (run / "results" / "topology.json").write_text("{not json")
    html = build_report(run).read_text()
    assert "not valid JSON" in html


def test_missing_run_folder(tmp_path):
    with pytest.raises(MissingFileError):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="not a run folder"):
        build_report(tmp_path / "empty")


def test_cli_report(report_runs, tmp_path):
    from deepprofile.cli import app

    run = _results_only(report_runs["a"], tmp_path / "run", keep=("capture", "mapper"))
    out = tmp_path / "reports" / "r.html"
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out) and out.exists()


def test_spectral_and_robustness_labels_say_what_they_show(full_report, report_runs):
    """The eigenvalue axis says which normalisation it shows, both λmax columns are there,
    the baseline says how it was built, and the robustness caption gives the kept counts."""
    import json

    _, html = full_report
    assert "λmax of WWᵀ/n" in html and "α̂ (α·log₁₀ λmax of WWᵀ)" in html
    assert "a fresh small_resnet built by its own constructor" in html
    attribution = json.loads((report_runs["a"] / "results" / "attribution.json").read_text())
    random = attribution["robustness"]["perturbations"]["random"]
    assert f"noise: {random['n_kept']} of {random['n_images']}" in html


def test_esd_axis_names_the_normalisation():
    import numpy as np

    from deepprofile.report import figures as F

    fig = F.esd_panels([{"layer": "conv", "eigenvalues": np.linspace(0.1, 2.0, 20).tolist(),
                         "mp": None, "power_law": None}])
    assert fig.layout.xaxis.title.text == "eigenvalue λ of W Wᵀ / n (normalised)"
