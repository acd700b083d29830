"""Preflight: the compute of a training run from its config, by every method that can run.

Config in, one Preflight out: an Estimate per method, the central figure (counted when the
model could be counted, else analytic, else hardware), and a range that covers every method's
range and every stated assumption. Rules see only the Estimates; reports see only to_dict().
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.estimate import Estimate, Figures
from auditor.text import two_significant
from auditor.methods.agreement import disagreements
from auditor.text import error_text, printable

PREFERENCE = ("counted", "analytic", "hardware")
_COUNTED: dict[str, tuple] = {}  # cache key -> count_model's answer, for this process


class PreflightError(Exception):
    """The run cannot be estimated as configured; the message names the file and the field."""


@dataclass
class Preflight:
    run: str
    estimates: list[Estimate]
    skipped: dict[str, str] = field(default_factory=dict)     # method -> why it could not run
    model: dict[str, Any] = field(default_factory=dict)       # parameters, active parameters, shape
    tokens: int | None = None
    lineage: dict[str, Any] | None = None
    modality: str = "text"
    source: str | None = None
    verdicts: list = field(default_factory=list)              # rules.Verdict, filled by assess()
    as_of: str | None = None
    energy: dict[str, Any] | None = None                      # methods/energy.py, from the hardware plan

    @property
    def central(self) -> Estimate:
        by_method = {e.method: e for e in self.estimates}
        return next(by_method[m] for m in PREFERENCE if m in by_method)

    @property
    def total_flops(self) -> int:
        return self.central.flops

    @property
    def low(self) -> int:
        return min(e.low for e in self.estimates)

    @property
    def high(self) -> int:
        return max(e.high for e in self.estimates)

    @property
    def uncovered_ops(self) -> list[str]:
        return sorted({op for e in self.estimates for op in e.uncovered_ops})

    def figures(self) -> Figures:
        """What the rules judge of the plan: its range, the central method, its modality and lineage."""
        return Figures.of(self.low, self.total_flops, self.high, self.central.method, modality=self.modality,
                          lineage=self.lineage)

    def notification(self) -> dict[str, str]:
        """The EU notification form: two significant figures and the method (Guidelines 2.3.2)."""
        c = self.central
        return {"flops": two_significant(c.flops), "method": c.method,
                "text": f"{two_significant(c.flops)} FLOP, estimated by the {c.method} method "
                        f"(range {two_significant(self.low)} to {two_significant(self.high)})"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "source": self.source,
            "total_flops": self.total_flops,
            "low": self.low,
            "high": self.high,
            "central_method": self.central.method,
            "tokens": self.tokens,
            "modality": self.modality,
            "model": self.model,
            "lineage": self.lineage,
            "notification": self.notification(),
            "estimates": [e.to_dict() for e in self.estimates],
            "skipped_methods": self.skipped,
            "as_of": self.as_of,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "uncovered_ops": self.uncovered_ops,
            "disagreements": disagreements(self.estimates),
            "energy": self.energy,
        }


class NeedsTrustedRun(PreflightError):
    """No method could estimate the run without running code the caller does not trust (a gate
    that does not import the config's factory): it needs a run where that code is trusted."""


def assess(config_path, *, rules=None, as_of=None, progress: Callable[[str], None] | None = None,
           trust=None, lineage_from=None) -> Preflight:
    """Config file in, Preflight with verdicts out: what `auditor preflight` and `gate` run.

    ``rules``: ids or paths (relative to the working directory), or Rule objects already loaded.
    ``trust`` (auditor.inputs.policy.Trust; default: the user's own config) says whether the config's
    factory may be imported, where its files may be, and whether its ``rules:`` replace the
    default (every bundled rule, or ``rules``) or only add to it. Raises ConfigError,
    PreflightError or RuleError for bad input, each one line naming the file and the field.
    ``lineage_from(lineage) -> (lineage, note)``: fills in the base model's compute from elsewhere
    (auditor.registry.BaseCompute, from a model's recorded history); the note joins the assumptions
    of every verdict that uses it.
    """
    from auditor.inputs.policy import Trust
    from auditor.inputs.run_config import load_run_config
    from auditor.rules.verdicts import as_of_day, evaluate

    trust = trust or Trust()
    config = load_run_config(config_path, allow_paths=trust.allow_paths)
    chosen = choose_rules(config, rules, trust)      # before counting: a bad rule file fails fast
    result = run_preflight(config, progress=progress, trust=trust)
    note = None
    if lineage_from is not None and result.lineage:
        result.lineage, note = lineage_from(result.lineage)
    day = as_of_day(as_of)
    result.verdicts, result.as_of = evaluate(result.figures(), chosen, day), day.isoformat()
    for verdict in result.verdicts if note else ():
        if verdict.basis != "training" and verdict.inactive != "out_of_scope":
            verdict.assumptions.append(note)
    return result


def choose_rules(config, rules, trust) -> list:
    """The rules a config is judged by. The caller's (``rules``, else every bundled rule), then
    the config's own ``rules:``: in their place (trust.config_rules 'replace', one's own config) or
    added to them ('add', the gate), where they may neither repeat the caller's ids nor shadow a
    bundled rule or rule set (a config's own copy of eu-ai-act.yaml with its threshold at 1e40)."""
    from auditor.rules.rule_file import Rule, RuleError
    from auditor.rules.selection import bundled_rules, load_rules

    base = list(rules) if rules and all(isinstance(r, Rule) for r in rules) else \
        load_rules(list(rules)) if rules else None
    if not config.rules:
        return base if base is not None else load_rules(None)
    folder = Path(config.source_path).parent if config.source_path else Path.cwd()
    where = _where(config)
    try:
        own = load_rules(list(config.rules), base_dir=folder, roots=trust_roots(config, trust))
    except RuleError as exc:
        raise RuleError(f"{where}: {exc}" if not str(exc).startswith(str(folder)) else str(exc)) from None
    if trust.config_rules == "replace":
        return own
    chosen = base if base is not None else load_rules(None)
    bundled = {r.id: r for r in bundled_rules()}
    bundled_sets = {r.rule_set for r in bundled.values() if r.rule_set}
    bundled_files = {r.source for r in bundled.values()}
    for rule in own:
        clash = next((r for r in chosen if r.id == rule.id), None) or bundled.get(rule.id)
        if clash is not None and clash.source == rule.source:
            if clash not in chosen:
                chosen.append(rule)      # a bundled rule named by id: the real one, added
            continue
        if clash is not None or (rule.rule_set in bundled_sets and rule.source not in bundled_files):
            name = rule.id if clash is not None else rule.rule_set
            raise RuleError(f"{where}: rules: {rule.source} defines {name!r}, an id of the gate's rules or of a "
                            f"bundled rule: a config's rules add to the gate's and cannot replace one", field="rules")
        chosen.append(rule)
    return chosen


def trust_roots(config, trust) -> list[Path]:
    """The folders a config's files may be in: its repository and what the trust allows."""
    from auditor.inputs.run_config import allowed_roots

    folder = Path(config.source_path).parent if config.source_path else Path.cwd()
    return allowed_roots(folder, trust.allow_paths)


def _where(config) -> str:
    return str(config.source_path) if getattr(config, "source_path", None) else "config"


def build_model(config, hf_mapping: dict | None = None, *, max_modules: int | None = None):
    """The run's model (a torch.nn.Module) on the meta device, or None for a bare parameter count.

    ``hf_mapping``: the pathed hf_config's contents where the caller has read them already.
    ``max_modules``: the size cap (counting/limits.py). A factory is imported and called here:
    callers that do not trust the config check first (auditor.inputs.policy.Trust)."""
    import torch

    from auditor.counting import CountingError
    from auditor.counting.hf import build_model as build_hf
    from auditor.counting.hf import load_config
    from auditor.counting.limits import ModelTooLarge, module_budget
    from auditor.text import error_text

    spec, where = config.model, _where(config)
    if spec.hf_config is not None:
        # inline mapping, else what the caller read (a JSON object), else the path the config resolved
        source = spec.hf_config if isinstance(spec.hf_config, dict) else \
            hf_mapping if isinstance(hf_mapping, dict) else spec.hf_config_path
        try:
            return build_hf(load_config(source, label=f"{where}: model.hf_config"), max_modules=max_modules)
        except CountingError as exc:
            raise PreflightError(str(exc) if str(exc).startswith(where) else f"{where}: model.hf_config: {exc}") from None
    if spec.factory is not None:
        module_name, _, func_name = spec.factory.partition(":")
        # The user's code may fail in any way, sys.exit() included: that is its error, never our exit code.
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (Exception, SystemExit) as exc:
            raise PreflightError(f"{where}: model.factory: cannot import {spec.factory}: {error_text(exc)}") from None
        try:
            with torch.device("meta"), module_budget(max_modules):
                model = factory(**(spec.kwargs or {}))
        except ModelTooLarge as exc:
            raise PreflightError(f"{where}: model.factory: {exc}") from None
        except (Exception, SystemExit) as exc:
            raise PreflightError(f"{where}: model.factory: {spec.factory} raised {error_text(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise PreflightError(f"{where}: model.factory: {spec.factory} returned {type(model).__name__}; "
                                 "expected a torch.nn.Module")
        model.train()
        return model
    return None


def _cache_payload(config) -> dict | None:
    """What a count depends on, for configs given as data; None where the cache must not be used."""
    spec = config.model
    if spec.hf_config is None or config.data.seq_len is None:
        return None
    source = spec.hf_config
    if not isinstance(source, dict):
        from auditor.counting.limits import MAX_CONFIG_BYTES
        from auditor.files import read_regular

        try:
            source = json.loads(read_regular(spec.hf_config_path, MAX_CONFIG_BYTES).decode("utf-8-sig"))
        except (OSError, ValueError, TypeError, RecursionError):
            return None  # building reports the problem properly
    payload = {"hf_config": source, "seq_len": config.data.seq_len}
    if config.data.decoder_len is not None:
        payload["decoder_len"] = config.data.decoder_len
    return payload


def count_model(config, say: Callable[[str], None], trust=None):
    """(ModelInfo, StepCount, half-context total, why not counted) for the run's model."""
    from auditor.inputs.policy import Trust

    trust = trust or Trust()
    factory = config.model.factory
    if factory is not None and not trust.factory_allowed(factory):
        return None, None, None, (f"model.factory {factory!r} is not imported: the gate runs no code a config names "
                                  f"unless its own invocation allows it (--allow-factory or a policy file)")
    from auditor.counting import cache
    from auditor.counting.modelinfo import ModelInfo
    from auditor.counting.result import StepCount

    payload = _cache_payload(config)
    key = cache.cache_key(payload) if payload else None
    if key in _COUNTED:  # the same model and context met earlier in this process (a gate)
        return _COUNTED[key]
    hit = cache.load(key) if key else None
    if hit:
        say("count found in the cache")
        _COUNTED[key] = ModelInfo(**hit["info"]), StepCount.from_json(hit["step"]), hit["half_total"], None
        return _COUNTED[key]
    say("building the model on the meta device")
    model = build_model(config, payload["hf_config"] if payload else None, max_modules=trust.max_modules)
    _check_decoder_len(config, model)
    if model is None:
        return None, None, None, "the model is given as a bare parameter count"
    from auditor.counting import CountingError
    from auditor.counting.modelinfo import model_info
    from auditor.methods.counted import count_for_run

    info, seq_len = model_info(model), config.data.seq_len
    if seq_len is None:
        return info, None, None, "data.seq_len is not given: attention work depends on it"
    say(f"counting one sequence of {seq_len:,} tokens")
    try:
        step, half_total = count_for_run(model, seq_len, config.data.decoder_len)
    except CountingError as exc:
        if payload is None or "on the meta device" not in str(exc):
            return info, None, None, str(exc)
        say("the model cannot run on meta: counting shallow slices of it on the CPU")
        try:
            step, half_total = _count_by_slices(payload["hf_config"], seq_len, config.data.decoder_len)
        except Exception as why:           # SliceRefused, or the slice failing on the CPU too
            return info, None, None, f"{exc}; counting slices of it on the CPU: {error_text(why, with_type=False)}"
    if key:
        cache.store(key, {"info": info.to_dict(), "step": step.to_json(), "half_total": half_total})
        _COUNTED[key] = info, step, half_total, None
    return info, step, half_total, None


def _count_by_slices(hf_config: dict, seq_len: int, decoder_len: int | None):
    """count_for_run's answer for a model that fails on meta, from CPU slices (counting/slices.py)."""
    from auditor.counting.slices import count_hf_by_slices

    step, half_total, said = count_hf_by_slices(hf_config, seq_len, decoder_len)
    step.assumptions.extend(said)
    return step, half_total


def _check_decoder_len(config, model) -> None:
    """data.decoder_len is for an encoder-decoder's decoder: refused for any other model, where it
    would be silently ignored."""
    from auditor.counting.hf import is_encoder_decoder

    if config.data.decoder_len is not None and not is_encoder_decoder(getattr(model, "config", None)):
        raise PreflightError(f"{_where(config)}: data.decoder_len: got {config.data.decoder_len}; expected "
                             f"decoder_len only for a Hugging Face encoder-decoder model (T5, BART, Whisper)")


def run_preflight(config, *, progress: Callable[[str], None] | None = None, trust=None) -> Preflight:
    from auditor.methods.analytic import analytic_estimate
    from auditor.methods.counted import estimate_from_counts
    from auditor.methods.energy import energy_from_plan, no_energy_reason
    from auditor.methods.hardware import hardware_estimate

    say = progress or (lambda message: None)
    where, tokens, seq_len = _where(config), config.total_tokens, config.data.seq_len
    result = Preflight(run=config.run, estimates=[], tokens=tokens, modality=config.data.modality,
                       source=printable(getattr(config, "source_path", "") or "") or None,
                       lineage=config.lineage.model_dump() if config.lineage else None)

    info, step, half_total, why_not = count_model(config, say, trust)
    if step is not None:
        result.estimates.append(estimate_from_counts(step, half_total, seq_len, tokens))
    else:
        result.skipped["counted"] = why_not
    if info is not None:
        result.model = {"parameters": info.parameters, "active_parameters": info.active_parameters,
                        "embedding_parameters": info.embedding_parameters, "n_layer": info.n_layer,
                        "n_heads": info.n_heads, "head_dim": info.head_dim, "qk_head_dim": info.qk_head_dim,
                        "v_head_dim": info.v_head_dim, "d_model": info.d_model,
                        "experts": info.experts, "experts_per_token": info.top_k}
    else:
        result.model = {"parameters": config.model.parameters,
                        "active_parameters": config.model.active_parameters or config.model.parameters}

    n_total = result.model.get("parameters")
    n_active = result.model.get("active_parameters")
    if n_total:
        shaped = info is not None and info.n_heads and info.qk_head_dim and info.n_layer and seq_len
        result.estimates.append(analytic_estimate(
            n_total, tokens, active_params=n_active if n_active and n_active != n_total else None,
            n_layer=info.n_layer if shaped else None, n_ctx=seq_len if shaped else None,
            n_heads=info.n_heads if shaped else None, head_dim=info.qk_head_dim if shaped else None,
            v_head_dim=info.v_head_dim if shaped else None))

    if config.hardware is not None:
        hw = config.hardware
        kwargs = {"utilization": hw.utilization}
        if hw.utilization_band is not None:
            kwargs["band"] = tuple(hw.utilization_band)
        result.estimates.append(hardware_estimate(hw.accelerator, hw.count, hw.hours, **kwargs))
        result.energy = energy_from_plan(hw.accelerator, hw.count, hw.hours)
        if result.energy is None:
            result.skipped["energy"] = no_energy_reason(hw.accelerator)
    else:
        result.skipped["hardware"] = "no hardware plan in the config"
        result.skipped["energy"] = "no hardware plan in the config: the energy is estimated from it"

    if not result.estimates:
        untrusted = config.model.factory is not None and trust is not None and \
            not trust.factory_allowed(config.model.factory)
        raise (NeedsTrustedRun if untrusted else PreflightError)(
            f"{where}: no method could estimate this run: "
            + "; ".join(f"{m}: {why}" for m, why in result.skipped.items()))
    _cover_incomplete_count(result)
    return result


def _cover_incomplete_count(result: Preflight) -> None:
    """A count with uncovered ops is a lower bound: say that the range's high end comes from the others."""
    counted = next((e for e in result.estimates if e.method == "counted"), None)
    if counted is not None and counted.uncovered_ops:
        counted.assumptions.append("this count is a lower bound; the run's high end is taken from the other "
                                   "methods' ranges")
