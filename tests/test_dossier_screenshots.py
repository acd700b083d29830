"""The pages docs/screenshots/ shows, checked in headless Chromium: what each must say, and no
console errors (benchmarks/dossier_screenshots.py makes them and their PNGs)."""
import sys
from pathlib import Path

import pytest
from browser import browse, needs_chromium

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dossier_screenshots  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return dossier_screenshots.write_pages(tmp_path_factory.mktemp("pages"))


def cells(page, table: str, column: int) -> list[str]:
    return page.locator(f"#{table} tr td:nth-child({column})").all_inner_texts()


@needs_chromium
@pytest.mark.slow
def test_a_tracked_run_with_eval_passes_shows_a_training_steps_breakdown(pages, tmp_path):
    seen = browse(pages["tracked-with-eval"], tmp_path, lambda page: (
        page.inner_text("#headline"), cells(page, "breakdown-ops", 1), cells(page, "breakdown-ops", 3),
        cells(page, "breakdown-modules", 3), page.inner_text("#breakdown-of"), page.inner_text("#what-ran")))
    headline, ops, op_backward, module_backward, of, what_ran = seen.read
    assert seen.errors == [] and seen.requests == [pages["tracked-with-eval"].as_uri()]
    assert headline.startswith("PASS: Clear of every blocking rule in force")
    by_op = dict(zip(ops, op_backward))
    assert by_op["aten.mm"] != "0" and by_op["aten.bmm"] != "0"   # an eval pass would show 0 on every row
    assert len(module_backward) == 2 and "0" not in module_backward    # lm_head, transformer.h.{0..1}
    assert of.startswith("Of training step 1: 1 call of the model")
    assert "Stage\tpre-training" in what_ran and "How it ended\tfinished at step 6" in what_ran


@needs_chromium
@pytest.mark.slow
def test_a_preflight_at_risk_leads_with_the_blocking_rule(pages, tmp_path):
    seen = browse(pages["preflight-at-risk"], tmp_path, lambda page: (
        page.inner_text("#headline"), page.inner_text("#deadline"), cells(page, "blocking-rules", 1)))
    headline, deadline, blocking = seen.read
    assert seen.errors == [] and seen.dialogs == []
    assert headline == "FAIL: At risk of crossing eu-ai-act-systemic-risk."
    assert deadline == "First deadline: notify the Commission by 2026-06-15 (eu-ai-act-systemic-risk)"
    assert blocking[0].startswith("eu-ai-act-systemic-risk")


@needs_chromium
@pytest.mark.slow
def test_a_stopped_run_says_stopped_in_its_headline(pages, tmp_path):
    seen = browse(pages["stopped-run"], tmp_path, lambda page: (page.inner_text("#headline"),
                                                                 page.inner_text("#what-ran")))
    headline, what_ran = seen.read
    assert seen.errors == []
    assert headline.startswith("PASS: Stopped by the guard at step 4, at ~3.775e8 FLOP, before the call that would "
                               "cross lab-pilot-budget.")
    assert "How it ended\tSTOPPED by the guard at step 4" in what_ran


def test_the_checked_in_screenshots_are_small_pngs():
    shots = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    for name in dossier_screenshots.PAGES:
        raw = (shots / f"{name}.png").read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) < dossier_screenshots.MAX_PNG_BYTES, name
