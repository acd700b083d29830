"""What a tracked run's dossier says was run, as (entry, value) rows every view shows alike, and
the words its headline leads with when the run did not simply finish.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from auditor.methods.energy import mwh
from auditor.report.headline import plural
from auditor.record.run_facts import STAGE_WORDS, UNKNOWN_STAGE
from auditor.text import sci

REFERENCE_WHAT = ("the transformers Trainer's state.total_flos: its own estimate, 6 x non-embedding parameters x "
                  "input tokens (no attention, no head over the embeddings)")


def tracked_of(d: dict[str, Any]) -> dict[str, Any]:
    tracked = d.get("tracked") if d.get("kind") == "tracked" else None
    return tracked if isinstance(tracked, dict) else {}


def ending_words(d: dict[str, Any]) -> str | None:
    """The headline's first words for a run that was stopped or failed (None: it finished, or a plan)."""
    ending = tracked_of(d).get("ending") or {}
    if ending.get("how") == "stopped":
        return (f"Stopped by the guard at step {ending['step']:,}, at {sci(ending['flops'])} FLOP, before the call "
                f"that would cross {ending['limit']}.")
    if ending.get("how") == "failed":
        return f"Ended by an error ({ending['error']}) at step {ending['step']:,}: the figures are up to there."
    return None


def wall_hours(tracked: dict[str, Any]) -> float | None:
    try:
        start, end = datetime.fromisoformat(tracked["started"]), datetime.fromisoformat(tracked["ended"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds() / 3600


def energy_words(energy: dict[str, Any] | None) -> str:
    """An energy entry: the figure and its range with the method, or why there is none."""
    if not energy or "wh" not in energy:
        return (energy or {}).get("reason", "not estimated: no hardware plan with a rated power, and no measurement")
    return f"{energy_figure(energy)}, {energy_method(energy)}"


def energy_figure(energy: dict[str, Any]) -> str:
    return f"{mwh(energy['wh'])} (range {mwh(energy['low_wh'])} to {mwh(energy['high_wh'])})"


def energy_method(energy: dict[str, Any]) -> str:
    """Annex XI (2)(e)'s distinction: known (measured), or estimated from the computational resources used."""
    known = "known (measured)" if energy.get("measured") else "estimated from the computational resources used"
    return f"{known}: {energy['method']}"


def run_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The 'What was run' table of a tracked dossier; empty for a plan (its own sections say it)."""
    t = tracked_of(d)
    if not t:
        return []
    rows = [("Model", _model(t.get("model"))), ("Tokens seen", _tokens(t.get("tokens"))),
            ("Context length", _context(t.get("context_length"))),
            ("Stage", STAGE_WORDS.get(t.get("stage"), UNKNOWN_STAGE)), ("Lineage", _lineage(t.get("lineage"))),
            ("Hardware", _hardware(t.get("hardware"))), ("Wall time", _wall(t)),
            ("Run by", t.get("operator") or "not recorded"), ("Energy", energy_words(t.get("energy"))),
            ("How it ended", _ending(t.get("ending"))), ("Resumed", _resumes(t.get("resumes")))]
    reference = t.get("reference")
    if reference:
        rows.append(("Trainer's own figure", reference_words(reference, d["total_flops"])))
    return [(entry, value) for entry, value in rows if value is not None]


def reference_words(reference: dict[str, Any], ours: int) -> str:
    ratio = ours / reference["hf_total_flos"] if reference.get("hf_total_flos") else None
    return (f"{sci(reference['hf_total_flos'])} FLOP, {REFERENCE_WHAT}; the measured figure is "
            + (f"{ratio:.3f} x it" if ratio is not None else "not comparable (the Trainer's is 0)"))


def _model(model: dict[str, Any] | None) -> str | None:
    if not model:
        return None
    active = f", {model['active_parameters']:,} active per token" if model.get("active_parameters") else ""
    return (f"{model['class']}: {model['parameters']:,} parameters ({model['trainable_parameters']:,} trainable"
            f"{active})")


def _tokens(tokens: dict[str, Any] | None) -> str:
    if not tokens:
        return "not known: no integer token input was seen in a training call, and tokens= was not given"
    return f"{tokens['count']:,} ({tokens['how']})"


def _context(context: dict[str, int] | None) -> str:
    if not context:
        return "not known"
    parts = [f"longest training sequence {context['longest_seen']:,} tokens" if context.get("longest_seen") else None,
             f"the model's window {context['model_window']:,}" if context.get("model_window") else None]
    return "; ".join(p for p in parts if p)


def _lineage(lineage: dict[str, Any] | None) -> str:
    if not lineage:
        return "not given (a run from scratch, or ComputeAudit(lineage=...) was not told)"
    parts = [f"base model {lineage['base_model']}" if lineage.get("base_model") else None,
             f"base compute {sci(lineage['base_compute_flops'])} FLOP" if lineage.get("base_compute_flops") else None,
             f"developer: {lineage['developer']}" if lineage.get("developer") else None]
    return "; ".join(p for p in parts if p) or "given, empty"


def _hardware(hardware: dict[str, Any] | None) -> str | None:
    if not hardware:
        return None
    devices = ", ".join(f"{d['count']:,} x {d['name']}" for d in hardware["devices"])
    return f"{devices}; {hardware['world_size']:,} rank{'s' if hardware['world_size'] != 1 else ''}"


def _wall(t: dict[str, Any]) -> str | None:
    hours = wall_hours(t)
    if hours is None:
        return None
    return f"{t['started']} to {t['ended']} ({hours:,.2f} h, from the ledger's first and last records)"


def _ending(ending: dict[str, Any] | None) -> str:
    if not ending or ending.get("how") == "finished":
        return f"finished at step {(ending or {}).get('step', 0):,}" if ending else "not recorded"
    if ending["how"] == "stopped":
        return f"STOPPED by the guard at step {ending['step']:,}: {ending['message']}"
    return f"failed at step {ending['step']:,} ({ending['error']}); the dossier was written on the way out"


def _resumes(resumes: list[dict[str, Any]] | None) -> str:
    if not resumes:
        return "no: one unbroken run"
    said = [f"at step {r['step']:,} ({r['time']}{', after a crash' if r.get('after_crash') else ''}"
            + (f", {plural(r['rolled_back_records'], 'record')} after the checkpoint rolled back"
               if r.get("rolled_back_records") else "") + ")" for r in resumes]
    return f"{plural(len(resumes), 'time')}: " + "; ".join(said)


def phase_words(d: dict[str, Any]) -> str | None:
    """Compute by phase, each with what it is, for the documentation form (tracked runs)."""
    phases = tracked_of(d).get("flops_by_phase")
    if not phases:
        return None
    what = {"train": "training", "eval": "evaluation passes, not training compute"}
    order = sorted(phases, key=lambda name: (name != "train", name != "eval", name))
    return "; ".join(f"{name} {sci(phases[name])} FLOP ({what.get(name, 'tagged phase')})" for name in order)
