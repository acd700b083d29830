"""`auditor demo`: the plan, then the fact, for a small GPT-2 on the CPU, with both dossiers."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import click

from auditor.cli.common import main, preflight_dict, quiet_libraries
from auditor.report.formats import render
from auditor.files import write_atomic
from auditor.record import dossier
from auditor.report.views import dossier_html


def run_demo(plan: dict, config_path: Path, out: Path, steps: int, echo: Callable[[str], None]) -> Path:
    import torch

    from auditor.counting.hf import build_model, load_config
    from auditor.inputs.run_config import load_run_config
    from auditor.tracking import ComputeAudit

    preflight_html = out / "preflight.html"
    write_atomic(preflight_html, dossier_html(dossier.build(plan, run=plan["run"], config_path=config_path)).encode())

    config = load_run_config(config_path)
    seq_len, batch = config.data.seq_len, 4
    torch.manual_seed(0)
    model = build_model(load_config(config.model.hf_config_path), "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh ledger: the demo is not a resumed run
    echo(f"training the sample's model for {steps} steps of {batch} x {seq_len} tokens on the CPU, tracked ...")
    vocab = model.config.vocab_size
    with ComputeAudit(run_dir, model, optimizer, name=f"{plan['run']} (demo steps)", preflight=plan,
                      flush_every_steps=1) as run:
        for _ in range(steps):
            ids = torch.randint(0, vocab, (batch, seq_len))
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    tokens = steps * batch * seq_len
    planned = next(e for e in plan["estimates"] if e["method"] == "counted")["flops_per_token"]
    measured = run.total_flops // tokens
    echo(f"measured {run.total_flops:,} FLOPs over {tokens:,} tokens: {measured:,} a token; the plan counted "
         f"{planned:,} a token on the meta device ({'equal' if measured == planned else 'DIFFERENT'})")
    data = dossier.load(run_dir)
    html = run_dir / "dossier.html"
    write_atomic(html, dossier_html(data).encode())
    echo(f"ledger {run_dir / 'ledger.jsonl'} and sealed dossier {run_dir / dossier.DOSSIER_NAME} "
         f"(check: auditor verify {run_dir})")
    echo(f"preflight dossier: {preflight_html}")
    echo(f"HTML dossier: {html.resolve()}")
    return html


DEMO_RUN = Path(__file__).parents[1] / "data" / "demo-run.yaml"


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("auditor-demo"),
              show_default=True, help="Folder for the demo's outputs.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True, help="Steps of the tracked run.")
def demo(out: Path, steps: int) -> None:
    """Preflight a bundled sample run, train its model for a few tracked steps on the CPU, and
    write both dossiers; the last line is the HTML dossier's path."""
    quiet_libraries()
    plan = preflight_dict(DEMO_RUN)
    click.echo(render("plan", "text", plan) + "\n")
    run_demo(plan, DEMO_RUN, out, steps, echo=click.echo)
