"""Hugging Face models from their config, built on the meta device, and their example inputs.

Nothing is downloaded: a config is a ``config.json`` path or a mapping with ``model_type``;
transformers builds the model on ``torch.device("meta")``, where a 405B model costs no memory.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..numbers import error_text
from ..safefiles import FileRefused, describe, read_regular
from .limits import MAX_CONFIG_BYTES, ModelTooLarge, check_layer_counts, module_budget
from .result import StepCount
from .step import CountingError, count_step


def read_config_json(path: str | Path, where: str) -> Any:
    """A config.json's parsed contents: a regular file, bounded, valid JSON; CountingError else."""
    try:
        return json.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8-sig"))
    except FileRefused as exc:
        raise CountingError(f"{where}: the Hugging Face config {exc}") from None
    except OSError as exc:
        raise CountingError(f"{where}: cannot read the Hugging Face config: {describe(exc)}") from None
    except UnicodeDecodeError as exc:
        raise CountingError(f"{where}: not UTF-8 text (offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CountingError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    except RecursionError:
        raise CountingError(f"{where}: not valid JSON: nested too deeply") from None


def load_config(source: Mapping | str | Path, *, label: str | None = None):
    """A ``PretrainedConfig`` from a mapping or a config.json path."""
    from transformers import CONFIG_MAPPING, PretrainedConfig

    if isinstance(source, PretrainedConfig):
        return source
    where = label or (str(source) if not isinstance(source, Mapping) else "inline hf_config")
    if not isinstance(source, Mapping):
        source = read_config_json(source, where)
        if not isinstance(source, Mapping):
            raise CountingError(f"{where}: expected a JSON object with model_type, got {type(source).__name__}")
    model_type = source.get("model_type")
    if not model_type:
        raise CountingError(f"{where}: field model_type is missing; expected one of the transformers "
                            f"model types, e.g. llama, mixtral, t5")
    if model_type not in CONFIG_MAPPING:
        raise CountingError(f"{where}: model_type {model_type!r} is not known to the installed transformers")
    fields = {k: v for k, v in source.items() if k != "model_type"}
    try:
        return CONFIG_MAPPING[model_type](**fields)
    except Exception as exc:
        raise CountingError(f"{where}: transformers rejected the {model_type} config: "
                            f"{error_text(exc, with_type=False)}") from None


def model_class(config):
    """Causal LM where transformers has one, else sequence-to-sequence LM, else the bare model."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    for auto in (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModel):
        if type(config) in auto._model_mapping:
            return auto
    raise CountingError(f"{config.model_type}: transformers has no model class for this config")


def build_model(config, device: str | torch.device = "meta", *, max_modules: int | None = None) -> torch.nn.Module:
    """The model for ``config`` on ``device``; CountingError past ``max_modules`` (counting/limits.py)."""
    auto = model_class(config)
    try:
        check_layer_counts(config.to_dict(), max_modules)
        with torch.device(device), module_budget(max_modules):
            model = auto.from_config(config)
    except ModelTooLarge as exc:
        raise CountingError(f"{config.model_type}: {exc}") from None
    except Exception as exc:
        raise CountingError(f"{config.model_type}: transformers cannot build the model: {error_text(exc)}") from None
    model.train()
    return model


def example_inputs(model: torch.nn.Module, batch: int, seq_len: int, decoder_len: int | None = None) -> dict[str, Any]:
    """Token ids and labels for one training step: the model computes its own loss."""
    config = model.config
    device = next(model.parameters()).device
    vocab = int(getattr(config, "vocab_size", None) or 2)
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device) if device.type == "meta" \
        else torch.randint(0, vocab, (batch, seq_len), device=device)
    if getattr(config, "is_encoder_decoder", False):
        dec = decoder_len or seq_len
        labels = torch.zeros(batch, dec, dtype=torch.long, device=device)
        # Decoder inputs given outright: shifting labels needs a start token not every config has.
        return {"input_ids": ids, "decoder_input_ids": labels, "labels": labels}
    return {"input_ids": ids, "labels": ids}


def count_hf(config_source: Mapping | str | Path, *, batch: int = 1, seq_len: int | None = None,
             decoder_len: int | None = None, device: str = "meta", repeated_blocks: bool = True,
             max_modules: int | None = None) -> StepCount:
    """FLOPs of one training step of a Hugging Face model built from its config."""
    config = load_config(config_source)
    if seq_len is None:
        seq_len = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048)
    model = build_model(config, device, max_modules=max_modules)
    inputs = example_inputs(model, batch, seq_len, decoder_len)
    result = count_step(model, inputs, tokens=batch * seq_len, repeated_blocks=repeated_blocks,
                        name=config.model_type)
    result.assumptions.append(f"one step of batch {batch} x sequence length {seq_len}"
                              + (f", decoder length {decoder_len or seq_len}" if config.is_encoder_decoder else ""))
    return result
