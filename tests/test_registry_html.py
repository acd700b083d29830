"""The registry as one HTML page, in headless Chromium: self-contained (the only request is the
page itself), no script (a model named <script>alert(1)</script> is text), no console errors, and
the figures a reviewer needs: each model's verdicts, crossing dates and deadlines."""
import re

from browser import browse, needs_chromium
from helpers import invoke
from registry_runs import E, at, daily, three_stages, write_run

HOSTILE = "<script>alert(1)</script>"




def build_page(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    runs = three_stages(tmp_path / "runs")
    for stage in runs:
        assert invoke("registry", "add", runs[stage], "--model", "m", "--stage", stage, "--registry", url).exit_code == 0
    theirs = write_run(tmp_path / "theirs", at("2026-03-01"), daily(1, 4, 10 * E, "2026-03"), name="it's \"theirs\"",
                       close=at("2026-03-05"))
    result = invoke("registry", "add", theirs, "--model", HOSTILE, "--stage", "sft", "--from", "m", "--developer",
                    "other", "--registry", url)
    assert result.exit_code == 0, result.output
    page = tmp_path / "out" / "registry.html"
    result = invoke("registry", "html", "-o", page, "--as-of", "2026-04-10", "--rules", "us-ca-sb53", "--rules",
                    "eu-ai-act", "--registry", url)
    assert result.exit_code == 0, result.output
    return page


def test_the_page_is_self_contained_and_escapes_every_name(tmp_path):
    html = build_page(tmp_path).read_text()
    assert "<script" not in html and HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", html)        # nothing to load
    assert "2026-04-07T00:00:00Z" in html and "2026-02-17" in html


@needs_chromium
def test_the_registry_page_in_headless_chromium(tmp_path):
    page_file = build_page(tmp_path)
    seen = browse(page_file, tmp_path, lambda page: (page.inner_text("body"), page.inner_text("#summary"),
                                                      page.locator("h2").all_inner_texts()), width=1200)
    text, banner, headings = seen.read
    assert seen.errors == []
    assert seen.requests == [page_file.as_uri()]     # the page itself, nothing from the network
    assert seen.dialogs == []                        # the hostile model name did not run
    assert HOSTILE in headings and "m" in headings and "Runs and plans" in headings
    assert banner.startswith("Crossed:") and HOSTILE in banner
    # m: 1.01e26 cumulative, SB 53 crossed on 2026-04-07 after 2026-04-06; the EU notice due 2026-02-17
    assert "1.01e26 FLOP cumulative" in text and "2026-04-07T00:00:00Z" in text and "after 2026-04-06T00:00:00Z" in text
    assert "notify the Commission by 2026-02-17" in text
    assert 'it\'s "theirs"' in text and "another developer" in text
    assert seen.screenshot.stat().st_size > 20_000
