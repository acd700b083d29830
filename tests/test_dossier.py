"""Dossiers: sealed canonical JSON, verify catching every changed byte, inert hostile text,
Markdown that renders as tables, and the HTML in a real browser."""
import json
from pathlib import Path

import pytest

from browser import browse, needs_chromium
from helpers import invoke

from auditor.preflight import assess
from auditor.record import dossier
from auditor.report.views import dossier_html, dossier_markdown

HOSTILE = "<script>alert(1)</script>"


def small_dossier(tmp_path: Path, run: str = "small-run", name: str = "run.yaml") -> dict:
    config = tmp_path / name
    config.write_text(f"run: {json.dumps(run)}\nmodel: {{parameters: 7e9}}\ndata: {{tokens: 1e15}}\n")
    plan = assess(config, rules=["example-lab-policy-budget"], as_of="2026-06-01").to_dict()
    return dossier.build(plan, run=plan["run"], config_path=config)




def test_canonical_sealed_and_ints(tmp_path):
    data = small_dossier(tmp_path)
    path = dossier.write(data, tmp_path / "dossier.json")
    raw = path.read_bytes()
    assert raw == (json.dumps(json.loads(raw), sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()
    loaded = dossier.load(path)
    assert loaded["total_flops"] == 6 * 7 * 10 ** 9 * 10 ** 15 and isinstance(loaded["total_flops"], int)
    assert loaded["schema_version"] == "1" and loaded["tool"]["torch"].startswith("2.")
    assert loaded["config"]["sha256"] == __import__("hashlib").sha256((tmp_path / "run.yaml").read_bytes()).hexdigest()
    body = {k: v for k, v in loaded.items() if k != "seal"}
    expected = __import__("hashlib").sha256(
        (json.dumps(body, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()).hexdigest()
    assert loaded["seal"]["digest"] == expected
    assert invoke("verify", path).exit_code == 0


@pytest.mark.slow
def test_every_single_byte_change_is_caught(tmp_path):
    path = dossier.write(small_dossier(tmp_path), tmp_path / "dossier.json")
    original = path.read_bytes()
    assert len(original) < 12_000  # small enough to try every byte
    missed = []
    for i in range(len(original)):
        changed = bytearray(original)
        changed[i] = (changed[i] + 1) % 256 if changed[i] != 0x20 else 0x21
        path.write_bytes(bytes(changed))
        try:
            dossier.load(path)
            missed.append(i)
        except dossier.DossierError:
            pass
    assert missed == []
    path.write_bytes(original)
    # Through the command line: tampered is exit 1, naming what differs; unreadable is exit 2.
    changed = original.replace(b'"total_flops": 42', b'"total_flops": 43', 1)
    assert changed != original
    path.write_bytes(changed)
    result = invoke("verify", path)
    assert result.exit_code == 1 and "tampered" in result.output
    assert invoke("verify", tmp_path / "missing.json").exit_code == 2


def test_hostile_run_name_and_quoted_path_render_inert(tmp_path):
    data = small_dossier(tmp_path, run=HOSTILE, name='we"ird\'s config.yaml')
    html = dossier_html(data)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "we&#34;ird&#39;s config.yaml" in html
    md = dossier_markdown(data)
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_markdown_renders_tables_in_a_gfm_renderer(tmp_path):
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(dossier_markdown(small_dossier(tmp_path)))
    assert html.count("<table>") == 3  # the estimates, the rules and the documentation form
    assert "<td>example-lab-policy-budget (blocking)</td>" in html
    # the pass/fail line first, then why and what follows
    assert "<p><strong>FAIL</strong>: Crosses example-lab-policy-budget.</p>" in html
    assert html.index("FAIL") < html.index("Why:") < html.index("What follows:") < html.index("<table>")


def test_report_formats(tmp_path):
    """report shows verdicts, so it exits as the README says: 1 when a blocking rule is crossed."""
    path = dossier.write(small_dossier(tmp_path), tmp_path / "dossier.json")
    for fmt in ("text", "json", "md", "html"):
        result = invoke("report", path, "--format", fmt)
        assert result.exit_code == 1, result.output               # 4.2e25 crosses the 2e25 budget
    clear = tmp_path / "clear"
    clear.mkdir()
    (clear / "run.yaml").write_text("run: small\nmodel: {parameters: 7e9}\ndata: {tokens: 1e9}\n")
    plan = assess(clear / "run.yaml", rules=["example-lab-policy-budget"], as_of="2026-06-01").to_dict()
    dossier.write(dossier.build(plan, run="small", config_path=clear / "run.yaml"), clear / "dossier.json")
    assert invoke("report", clear).exit_code == 0
    assert json.loads(invoke("report", path, "--format", "json").output)["seal"] == dossier.load(path)["seal"]
    out = tmp_path / "reports" / "d.html"
    assert invoke("report", tmp_path, "--format", "html", "-o", out).exit_code == 1 and out.is_file()
    path.write_bytes(path.read_bytes().replace(b"small-run", b"small-rum"))
    refused = invoke("report", path)
    assert refused.exit_code == 2 and "tampered" in refused.stderr


@needs_chromium
def test_html_in_headless_chromium(tmp_path):
    data = small_dossier(tmp_path, run=HOSTILE)
    page_file = tmp_path / "dossier.html"
    page_file.write_text(dossier_html(data))
    seen = browse(page_file, tmp_path, lambda page: (page.inner_text("body"), page.inner_text("#summary"),
                                                      page.locator("svg").count()))
    text, banner, charts = seen.read
    assert seen.errors == []
    assert seen.requests == [page_file.as_uri()]  # the page itself, nothing from the network
    assert seen.dialogs == []  # the hostile run name did not run
    assert HOSTILE in text  # shown as text
    assert "4.2e25 FLOP" in banner and "Crosses example-lab-policy-budget" in banner
    assert charts >= 1 and "Rules" in text and "example-lab-policy-budget" in text
    assert seen.screenshot.stat().st_size > 10_000
