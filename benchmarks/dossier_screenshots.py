"""The dossier screenshots in docs/screenshots/: three HTML dossiers a reviewer meets, made from
scratch (random weights, nothing downloaded) and photographed by headless Chromium.

    python benchmarks/dossier_screenshots.py [OUT_DIR]      # default docs/screenshots

(a) ``tracked-with-eval``: a tiny GPT-2 trained for a few steps with an evaluation pass after each,
    tracked (the breakdown is of a training step, its backward column filled);
(b) ``preflight-at-risk``: a plan whose range reaches the EU AI Act's 10^25 presumption;
(c) ``stopped-run``: a tracked run the guard stopped before it crossed a lab budget.

tests/test_dossier_screenshots.py loads the same pages in Chromium and checks what each must show.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

AS_OF = "2026-06-01"
WIDTH, HEIGHTS = 1000, {"tracked-with-eval": 2600, "preflight-at-risk": 1700, "stopped-run": 1500}
MAX_PNG_BYTES = 300_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--hide-scrollbars", "--force-device-scale-factor=1"]
# 27B parameters on 6e13 tokens on 4,096 H100s for 90 days: 9.7e24 by 6ND, its range over the line.
# The pilot budget: 4.5 steps of the tiny GPT-2 below (94,371,840 FLOPs a step): stopped before the 5th
PLAN = ("run: frontier-27b\nmodel: {parameters: 27e9}\ndata: {tokens: 6e13}\n"
        "hardware: {accelerator: H100-SXM, count: 4096, hours: 2160, utilization: 0.4}\n")


def tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=32, bos_token_id=0,
                                      eos_token_id=0))


def _train(run, model, opt, steps: int, evaluate: bool) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, 256, (4, 32), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if evaluate:
            model.eval()
            with torch.no_grad():
                held_out = torch.randint(0, 256, (8, 32), generator=g)
                model(input_ids=held_out, labels=held_out)
            model.train()


def tracked_with_eval(work: Path) -> dict:
    import torch

    from auditor import ComputeAudit
    from auditor.record import dossier

    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with ComputeAudit(work / "tracked-with-eval", model, opt, name="gpt2-tiny-pretrain", rules=["eu-ai-act"],
                      stage="pretraining", operator="alice@lab-cluster") as run:
        _train(run, model, opt, 6, evaluate=True)
    return dossier.load(work / "tracked-with-eval")


def preflight_at_risk(work: Path) -> dict:
    from auditor.preflight import assess
    from auditor.record import dossier

    config = work / "frontier-27b.yaml"
    config.write_text(PLAN)
    plan = assess(config, as_of=AS_OF).to_dict()
    return dossier.build(plan, run=plan["run"], config_path=config)


def stopped_run(work: Path) -> dict:
    import torch

    from auditor import ComputeAudit, ComputeBudgetExceeded
    from auditor.record import dossier

    rule = work / "lab-budget.yaml"
    rule.write_text("id: lab-pilot-budget\ntitle: the pilot's compute budget\njurisdiction: internal\n"
                    "citation: {text: 'Lab policy: pilot runs', url: 'https://example.org/lab-policy'}\n"
                    "threshold_flops: 4.25e8\ncomparison: '>'\nbasis: training\nstatus: in_force\nblocking: true\n")
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    try:
        with ComputeAudit(work / "stopped-run", model, opt, name="gpt2-tiny-pilot", rules=[str(rule)],
                          on_exceed="stop", stage="pretraining", operator="alice@lab-cluster") as run:
            _train(run, model, opt, 20, evaluate=False)
    except ComputeBudgetExceeded:
        pass
    return dossier.load(work / "stopped-run")


PAGES = {"tracked-with-eval": tracked_with_eval, "preflight-at-risk": preflight_at_risk, "stopped-run": stopped_run}


def write_pages(work: Path) -> dict[str, Path]:
    """Each page's HTML file, made in ``work``."""
    from auditor.report.views import dossier_html

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the guard's and transformers' warnings: not the page's business
        for name, make in PAGES.items():
            page = work / f"{name}.html"
            page.write_text(dossier_html(make(work)))
            out[name] = page
    return out


def screenshot(page: Path, png: Path, height: int, chromium: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={WIDTH},{height}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name, page in write_pages(Path(work)).items():
            png = out / f"{name}.png"
            screenshot(page, png, HEIGHTS[name], chromium)
            size = png.stat().st_size
            print(f"{png}: {size:,} bytes" + ("" if size < MAX_PNG_BYTES else f" (over {MAX_PNG_BYTES:,})"))
            if size >= MAX_PNG_BYTES:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
