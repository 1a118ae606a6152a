"""The TCO report (docs/report.md): self-contained HTML, the same content as Markdown with PNGs beside it,
JSON, simulated and measured figures read from beside plan.json, and a real headless browser (Debian's
chromium through Selenium and chromedriver) that loads the page without console errors, renders every
chart at a non-zero size, keeps charts within A4 and Letter pages in print, and saves a screenshot to
test-artifacts/report.png."""
from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("matplotlib")

from hetagent import api
from hetagent.report import report
from hetagent.report.content import SECTION_IDS

ARTIFACTS = ROOT / "test-artifacts"
CORE_SECTIONS = [s for s in SECTION_IDS if s not in ("simulation", "measured")]
EXAMPLE = ROOT / "configs" / "examples" / "paper_table3"


@pytest.fixture(scope="module")
def t3_plan(tmp_path_factory) -> Path:
    p = api.plan(str(EXAMPLE / "workflow.yaml"), profiles=str(EXAMPLE / "profiles.yaml"))
    out = tmp_path_factory.mktemp("t3") / "plan.json"
    out.write_text(p.dumps())
    return out


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> tuple[dict, Path, str]:
    """(report model, report.html, its text) for the README's voice agent, sweeps included."""
    from hetagent.report import build_model
    from hetagent.report.html import render
    d = tmp_path_factory.mktemp("voice")
    p = api.plan(str(ROOT / "configs" / "workflows" / "voice_agent.yaml"))
    plan = d / "plan.json"
    plan.write_text(p.dumps())
    model = build_model(plan, budget_s=180)
    html = render(model)
    (d / "report.html").write_text(html)
    return model, d / "report.html", html


def check_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE), "a network reference"
    assert "<script" not in html.lower()
    assert "@import" not in html and "@font-face" not in html
    for url in re.findall(r"url\(([^)]*)\)", html):
        assert url.strip("'\" ").startswith("data:"), url
    for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', html):
        assert src.startswith("data:image/"), src[:40]
    assert "@media print" in html and "break-inside: avoid" in html


def test_html_is_self_contained_and_complete(t3_plan, tmp_path):
    out = tmp_path / "report.html"
    html = report(t3_plan, out=out)
    assert out.read_text() == html
    check_self_contained(html)
    for sid in CORE_SECTIONS:
        assert f'<section id="{sid}"' in html, sid
    # the paper's Table 3: prefill on HP, decode on CO, 120 ms, $0.095/request; all-HP $0.11 feasible
    assert "1 x co, 1 x hp" in html
    assert "$95.00" in html                                  # per thousand requests
    assert "13.6%" in html                                   # saving against all-HP
    assert "measured (profile)" in html                      # profile figures are marked measured
    # every chart is an SVG data URI with a size
    imgs = re.findall(r'<img class="chart" src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+" '
                      r'width="(\d+)" height="(\d+)"', html)
    assert len(imgs) >= 5 and all(int(w) > 0 and int(h) > 0 for w, h in imgs)


def test_markdown_has_the_same_sections_and_pngs_beside(t3_plan, tmp_path):
    out = tmp_path / "report.md"
    text = report(t3_plan, "md", out)
    assert out.read_text() == text
    for sid in CORE_SECTIONS:
        assert f'<a id="{sid}"></a>' in text, sid
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(pngs) >= 5
    for name in pngs:
        f = tmp_path / name
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "/" not in name                               # beside the .md
    assert "| operator |" in text and "llm.prefill" in text
    assert "http" not in "".join(pngs)


def test_markdown_without_output_has_no_dangling_images(t3_plan):
    text = report(t3_plan, "md")
    assert "![" not in text and "## Recommendation" in text


def test_json_carries_every_number(t3_plan, tmp_path):
    out = tmp_path / "report.json"
    model = report(t3_plan, "json", out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(model))
    plan = json.loads(t3_plan.read_text())
    r = model["recommendation"]
    assert r["tco"]["per_hour"] == pytest.approx(plan["tco"]["per_hour"])
    assert r["tco"]["per_request"] == pytest.approx(0.095)
    assert r["best_homogeneous"]["device"] == "hp"
    assert r["sla"]["margin"]["ms"] == pytest.approx(0.0, abs=1e-6) and r["sla"]["meets"]
    names = {row["name"] for row in model["alternatives"]["rows"]}
    assert names == {"recommended plan", "all hp", "all co"}
    all_co = next(row for row in model["alternatives"]["rows"] if row["name"] == "all co")
    assert not all_co["feasible"] and all_co["end_to_end_ms"] == pytest.approx(160.0)
    assert [s["name"] for s in model["critical_path"]["steps"]] == ["llm.prefill", "llm.kv_transfer",
                                                                    "llm.decode"]
    pts = model["pareto"]["points"]
    assert pts and any(abs(p["sla_ms"] - 120) < 1e-6 and p["per_hour"] == pytest.approx(342.0) for p in pts)
    # profile devices cost the same whatever the electricity price: the sweep says so
    assert all(p["no_effect"] for p in model["sensitivity"]["params"].values())
    assert model["simulation"] is None and model["measured"] is None


def test_format_from_suffix_and_unknown_format(t3_plan, tmp_path):
    from hetagent.errors import HetagentError
    assert isinstance(report(t3_plan, out=tmp_path / "r.json", sweeps=False), dict)
    with pytest.raises(HetagentError):
        report(t3_plan, "pdf")
    with pytest.raises(HetagentError):
        report(tmp_path / "missing.json")


def test_simulated_and_measured_figures_beside_the_plan(t3_plan, tmp_path):
    plan = tmp_path / "plan.json"
    shutil.copy(t3_plan, plan)
    (tmp_path / "simulation.json").write_text(json.dumps({
        "latency_ms": {"p50": 118.0, "p95": 131.5, "p99": 140.2},
        "histogram": {"edges": [100, 110, 120, 130, 140, 150], "counts": [3, 40, 45, 10, 2]},
        "sla_attainment": 0.93, "requests": 100}))
    (tmp_path / "run.json").write_text(json.dumps({
        "latency_ms": {"p50_ms": 121.0, "p95_ms": 133.0},
        "stages": [{"operator": "llm.prefill", "latency_ms": {"p50": 81.0}, "emulated": True},
                   {"operator": "llm.decode", "latency_ms": 29.5}],
        "sla_attainment": 91.0}))
    model = report(plan, "json", sweeps=False)
    assert model["simulation"]["latency_ms"] == {"p50": 118.0, "p95": 131.5, "p99": 140.2}
    assert model["simulation"]["sla_attainment"] == pytest.approx(0.93)
    assert model["measured"]["latency_ms"]["p95"] == 133.0
    assert model["measured"]["sla_attainment"] == pytest.approx(0.91)
    assert model["measured"]["emulated"] == ["llm.prefill"]
    kinds = {p["kind"] for p in model["provenance"]}
    assert {"simulated", "measured and emulated"} <= kinds
    html = report(plan, out=tmp_path / "r.html", sweeps=False)
    check_self_contained(html)
    assert '<section id="simulation"' in html and '<section id="measured"' in html
    assert 'id="chart-simulation"' in html and 'id="chart-measured"' in html
    # a simulation block inside plan.json wins, and malformed files are ignored
    raw = json.loads(plan.read_text())
    raw["simulation"] = {"latency_ms": {"p95": 99.0}}
    (tmp_path / "run.json").write_text("{not json")
    model = report(raw, "json", sweeps=False)
    assert model["simulation"]["latency_ms"] == {"p95": 99.0} and model["measured"] is None


def test_plan_that_cannot_be_rebuilt_still_reports(t3_plan):
    raw = json.loads(t3_plan.read_text())
    raw["inputs"] = {}
    raw["ir"] = ""
    model = report(raw, "json")
    assert any("could not be rebuilt" in n for n in model["notes"])
    assert not model["pareto"]["available"] and not model["sensitivity"]["available"]
    assert model["critical_path"]["steps"]
    html = report(raw)
    check_self_contained(html)


def test_cli_command(t3_plan, tmp_path, capsys):
    from hetagent.report.commands import add_commands
    p = argparse.ArgumentParser(prog="hetagent")
    add_commands(p.add_subparsers(dest="command"))
    out = tmp_path / "r.md"
    args = p.parse_args(["report", str(t3_plan), "-o", str(out), "--no-sweeps"])
    args.func(args)
    assert out.is_file() and list(tmp_path.glob("r-*.png"))
    args = p.parse_args(["report", str(t3_plan), "--format", "json", "--no-sweeps"])
    args.func(args)
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and json.loads(line)["version"] == 1


@pytest.mark.slow
def test_voice_agent_report(voice):
    model, _, html = voice
    check_self_contained(html)
    for sid in CORE_SECTIONS:
        assert f'<section id="{sid}"' in html, sid
    assert model["alternatives"]["rows"][0]["chosen"]
    feasible = [r for r in model["alternatives"]["rows"] if r["feasible"] and not r["chosen"]]
    assert feasible and all(r["end_to_end_ms"] is not None and r["fleet"] for r in feasible)
    assert model["recommendation"]["tco"]["per_hour"] <= min(r["per_hour"] for r in feasible) + 1e-9
    assert set(model["sensitivity"]["params"]) == {"electricity_usd_per_kwh", "amortization_years",
                                                   "utilization"}
    for p in model["sensitivity"]["params"].values():
        base = [q for q in p["points"] if q["base"]]
        assert len(base) == 1 and base[0]["per_hour"] == pytest.approx(model["recommendation"]["tco"]["per_hour"])
        assert len(p["points"]) >= 4
    pts = model["pareto"]["points"]
    assert len(pts) >= 3
    costs = [p["per_hour"] for p in pts if p["feasible"]]
    assert costs == sorted(costs, reverse=True)              # looser SLA never costs more
    cp = model["critical_path"]
    assert cp["steps"][-1]["start_ms"] + cp["steps"][-1]["ms"] == pytest.approx(cp["end_to_end_ms"], rel=1e-3)
    assert len(model["assumptions"]["devices"]) >= 10
    assert all(d["figures"] for d in model["assumptions"]["devices"])
    assert model["timings"]["total_s"] < 180


# ----------------------------------------------------------------------------------- the browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver"
                                                if Path("/usr/bin/chromedriver").exists() else None)
PAGES_MM = {"A4": (210.0, 297.0), "Letter": (215.9, 279.4)}
MARGIN_MM = 12.0        # @page margin in the report's print stylesheet
PX_PER_MM = 96 / 25.4


def _driver():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver; the README's test command does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="hetagent-chromium-")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-extensions", "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
              "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1100,1400"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts), profile


CHART_BOXES = """return Array.from(document.querySelectorAll('img.chart')).map(function (e) {
  var r = e.getBoundingClientRect();
  return {id: e.closest('figure').id, w: r.width, h: r.height, right: r.right, complete: e.complete,
          natural: e.naturalWidth};
});"""


@pytest.mark.slow
def test_report_in_a_real_browser(voice):
    _, out, _ = voice
    driver, profile = _driver()
    try:
        driver.get(out.resolve().as_uri())
        ARTIFACTS.mkdir(exist_ok=True)
        errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert errors == [], errors
        boxes = driver.execute_script(CHART_BOXES)
        assert len(boxes) >= 6
        for b in boxes:
            assert b["complete"] and b["natural"] > 0 and b["w"] > 0 and b["h"] > 0, b
        assert driver.execute_script("return document.querySelectorAll('section').length") >= len(CORE_SECTIONS)
        # no request left the page: every resource it loaded is inline
        urls = driver.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        assert [u for u in urls if not u.startswith("data:")] == []
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        (ARTIFACTS / "report.png").write_bytes(base64.b64decode(shot["data"]))
        assert (ARTIFACTS / "report.png").stat().st_size > 10_000
        # print: on A4 and on Letter every chart fits the printable width and height
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        for name, (w_mm, h_mm) in PAGES_MM.items():
            width = int((w_mm - 2 * MARGIN_MM) * PX_PER_MM)
            height = int((h_mm - 2 * MARGIN_MM) * PX_PER_MM)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            for b in driver.execute_script(CHART_BOXES):
                assert 0 < b["w"] <= width + 0.5 and b["right"] <= width + 0.5, (name, b)
                assert 0 < b["h"] <= height, (name, b)
            pdf = driver.execute_cdp_cmd("Page.printToPDF", {"paperWidth": w_mm / 25.4,
                                                             "paperHeight": h_mm / 25.4,
                                                             "printBackground": True,
                                                             "preferCSSPageSize": False})
            assert len(pdf["data"]) > 10_000
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
