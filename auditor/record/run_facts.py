"""What a tracked run's dossier says was run, beside its figures: the model, the tokens, the
context, the stage and lineage, the hardware, who ran it, the energy, and how the run ended.

A preflight's dossier says these of a plan; a tracked run's says them of what ran. ComputeAudit
keeps one ``RunFacts`` (``audit.facts``) and calls it at four points: ``begin()`` at start (the
clock and the energy meter), ``saw_inputs()`` on every training call (tokens), ``stopped_by()``
when the guard stops the run, and ``finish()`` at stop (across ranks: one gather). The ledger
holds what survives a crash (start, resume and close records and their times); the rest is this
process's, and the dossier says which is which.

Tokens: the number of elements of the integer token input of every training call (``input_ids``
by keyword, else the first positional argument when it holds integers), padding included; a run
fed floats (images, audio features) has no token count unless ``tokens=`` declares one. A
declared figure is shown as declared, never mixed with a counted one.
"""
from __future__ import annotations

import time
from typing import Any

from auditor.text import printable

STAGE_WORDS = {"pretraining": "pre-training", "sft": "fine-tuning (supervised)", "rl": "reinforcement learning",
               "distillation": "distillation", "merge": "merge", "other": "other"}
UNKNOWN_STAGE = "unknown (not given: ComputeAudit(stage=...) or the registry recorder's stage says it)"
# tracked.* fields this module writes (dossier.build carries them; docs/dossier-schema.json says each)
DOSSIER_KEYS = ("started", "ended", "ending", "resumes", "stage", "operator", "tokens", "context_length", "model",
                "hardware", "energy", "lineage", "reference")
TOKEN_RULE = ("counted: the elements of the integer token input (input_ids, else the first positional argument) "
              "of every training call, padding included")


def stage_of(stage: str | None) -> str | None:
    """A stage as the registry names them (pretraining, sft, rl, distillation, merge, other)."""
    if stage is not None and stage not in STAGE_WORDS:
        raise ValueError(f"stage: got {str(stage)[:40]!r}; expected one of {', '.join(STAGE_WORDS)}")
    return stage


def tokens_of(tokens: int | None) -> int | None:
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0):
        raise ValueError(f"tokens: got {tokens!r}; expected a whole number of tokens >= 0")
    return tokens


class RunFacts:
    """One tracked run's facts as this process saw them (see the module's docstring)."""

    def __init__(self, *, stage: str | None = None, lineage: dict | None = None, operator: str | None = None,
                 tokens: int | None = None, preflight: dict | None = None, registry=None):
        self.stage = stage_of(stage) or stage_of(getattr(registry, "stage", None))
        self.lineage = lineage if lineage is not None else (preflight or {}).get("lineage")
        if lineage is None and getattr(registry, "parent", None):
            self.lineage = {"base_model": registry.parent, "developer": getattr(registry, "developer", None)}
        self.operator = operator
        self.declared_tokens = tokens_of(tokens)
        self.tokens_seen = 0         # this process's training calls' token inputs
        self.longest = 0             # the longest sequence among them
        self.ending: dict[str, Any] | None = None  # how the run ended, where not simply finished
        self.reference: dict[str, Any] | None = None  # a framework's own figure (HF's total_flos)
        self.meter = None            # auditor.methods.measured_energy.EnergyMeter, from begin()
        self.hardware: dict[str, Any] | None = None
        self.energy: dict[str, Any] | None = None
        self.model: dict[str, Any] | None = None
        self._began = None

    def begin(self, model=None) -> None:
        from auditor.methods.measured_energy import EnergyMeter

        self._began = time.monotonic()
        self.ending = None
        self.meter = EnergyMeter.start(model)

    def saw_inputs(self, args: tuple, kwargs: dict) -> None:
        """A training call's token input (cheap: one lookup and a dtype check; runs every call)."""
        ids = kwargs.get("input_ids") if kwargs else None
        if ids is None and args:
            ids = args[0]
        dtype = getattr(ids, "dtype", None)
        if dtype is None or dtype.is_floating_point or dtype.is_complex or not ids.dim() or str(dtype) == "torch.bool":
            return
        self.tokens_seen += ids.numel()
        self.longest = max(self.longest, ids.shape[-1])

    def stopped_by(self, limit: str, step: int, flops: int, message: str) -> None:
        self.ending = {"how": "stopped", "limit": limit, "step": step, "flops": flops, "message": message}

    def failed(self, error: type | None, step: int) -> None:
        """The run left its audit through an exception other than the guard's."""
        if error is not None and self.ending is None:
            self.ending = {"how": "failed", "error": error.__name__, "step": step}

    def finish(self, audit) -> None:
        """At stop: the model, hardware and energy; under torch.distributed every rank calls it
        (one all_gather of a small dict)."""
        from auditor.methods.measured_energy import hardware_of, model_facts

        hours = (time.monotonic() - self._began) / 3600 if self._began is not None else 0.0
        model = audit._model
        mine = {"device": hardware_of(model), "energy": self.meter.read(hours) if self.meter else None,
                "tokens": self.tokens_seen, "longest": self.longest}
        ranks = [mine]
        if audit._world > 1:
            import torch.distributed as dist

            ranks = [None] * audit._world
            dist.all_gather_object(ranks, mine)
        from auditor.methods.measured_energy import combine

        self.model = model_facts(model) if model is not None else None
        self.hardware, self.energy = combine(ranks, hours)
        self.tokens_seen, self.longest = sum(r["tokens"] for r in ranks), max(r["longest"] for r in ranks)

    # ---------------------------------------------------------------- the dossier's fields
    def dossier_fields(self, records: list[dict], steps: int, model=None) -> dict[str, Any]:
        """tracked.* beside the figures: times from the ledger, the rest from this process."""
        first, last = (records[0], records[-1]) if records else ({}, {})
        resumes = [resume_entry(r) for r in records if r.get("kind") == "resume"]
        tokens = ({"count": self.declared_tokens, "how": "declared (tokens=)"} if self.declared_tokens is not None
                  else {"count": self.tokens_seen, "how": TOKEN_RULE + (
                      f"; since the resume at step {resumes[-1]['step']:,}" if resumes else "")}
                  if self.tokens_seen else None)
        out = {"started": first.get("time"), "ended": last.get("time"),
               "ending": self.ending or {"how": "finished", "step": steps},
               "resumes": resumes, "stage": self.stage or "unknown", "operator": self.operator or _operator(),
               "tokens": tokens, "context_length": _context(model, self.longest),
               "model": self.model, "hardware": self.hardware, "energy": self.energy}
        if self.lineage:
            out["lineage"] = {k: v for k, v in dict(self.lineage).items() if v is not None}
        if self.reference:
            out["reference"] = self.reference
        return {k: v for k, v in out.items() if v is not None}


def resume_entry(record: dict) -> dict[str, Any]:
    """A ledger resume record as the dossier says it: where, when, and whether a crash preceded it (verify
    builds the ledger's side with it too)."""
    meta = record.get("meta") or {}
    out = {"step": record["step"], "time": record["time"], "after_crash": "torn_file" in meta}
    if meta.get("rolled_back_records"):
        out["rolled_back_records"] = meta["rolled_back_records"]
    return out


def _operator() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without one): the host still says where
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _context(model, longest: int) -> dict[str, int] | None:
    """The longest training sequence seen, and the model's own context window where its config says it."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    window = next((v for k in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
                   if isinstance(v := getattr(config, k, None), int)), None)
    out = {k: v for k, v in (("longest_seen", longest), ("model_window", window)) if v}
    return out or None


def check_against_ledger(tracked: dict, at_head: dict) -> list[str]:
    """verify: the times and resumes a dossier states must be its ledger's at the head it seals
    (``at_head``: the first record, the head record's time, the resume records up to it). Dossiers
    made before these fields lack them; a head found only in a rolled-back part has no such figures."""
    ledger = {"started": (at_head.get("first") or {}).get("time"), "ended": at_head.get("time"),
              "resumes": at_head.get("resumes")}
    return [f"tracked.{key} is {printable(str(tracked[key]))[:60]} but the ledger says {printable(str(value))[:60]} "
            "at the head the dossier seals"
            for key, value in ledger.items() if key in tracked and value is not None and tracked[key] != value]
