"""Hugging Face models from their config, built on the meta device, and their example inputs.

Nothing is downloaded: a config is a ``config.json`` path or a mapping with ``model_type``;
transformers builds the model on ``torch.device("meta")``, where a 405B model costs no memory.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from auditor.counting.limits import (
    MAX_CONFIG_BYTES,
    ModelTooLarge,
    check_layer_counts,
    module_budget,
)
from auditor.counting.result import StepCount
from auditor.counting.step import CountingError, count_step
from auditor.files import FileRefused, describe, read_regular
from auditor.text import error_text


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


def is_encoder_decoder(config) -> bool:
    """Whether a Hugging Face config describes an encoder-decoder (BART, T5, Whisper, ...)."""
    return bool(getattr(config, "is_encoder_decoder", False))


def model_class(config):
    """The transformers auto class whose model a config's users train.

    An encoder-decoder config (or a type in the text sequence-to-sequence mapping) builds its
    sequence-to-sequence LM, text or speech: bart, marian, whisper and nine more types are also
    in AutoModelForCausalLM's mapping, where they build their decoder alone (half the step or
    less). Any other config builds its causal LM, else its sequence-to-sequence LM, else the
    bare model. An encoder-decoder whose only LM class is that decoder (musicgen) is refused.
    """
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSpeechSeq2Seq,
    )

    def has(auto) -> bool:
        return type(config) in auto._model_mapping

    if is_encoder_decoder(config) or has(AutoModelForSeq2SeqLM):
        seq2seq = next((a for a in (AutoModelForSeq2SeqLM, AutoModelForSpeechSeq2Seq) if has(a)), None)
        if seq2seq is not None:
            return seq2seq
        if has(AutoModelForCausalLM):
            decoder = AutoModelForCausalLM._model_mapping[type(config)].__name__
            raise CountingError(f"{config.model_type}: an encoder-decoder config with no sequence-to-sequence "
                                f"class in transformers; its causal LM, {decoder}, is the decoder alone. Count "
                                f"the decoder's own config, or the whole model with count_step")
    for auto in (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModel):
        if has(auto):
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


def default_seq_len(config) -> int:
    """The model's context length where its config gives one (a speech decoder's: max_target_positions), else 2048."""
    for key in ("max_position_embeddings", "n_positions", "max_target_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def audio_window(model) -> tuple[int, int] | None:
    """(mel bins, frames) of the fixed input a Whisper-style encoder requires, else None.

    Such an encoder runs two 1-D convolutions over the mel frames and checks that they leave
    exactly max_source_positions positions (30 s of audio for Whisper), so the config fixes
    the input: max_source_positions x both convolutions' strides frames."""
    config = model.config
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    convs = [getattr(encoder, name, None) for name in ("conv1", "conv2")]
    mel, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
    if not (isinstance(mel, int) and isinstance(positions, int)
            and all(isinstance(conv, torch.nn.Conv1d) for conv in convs)):
        return None
    return mel, positions * convs[0].stride[0] * convs[1].stride[0]


def _token_ids(batch: int, length: int, vocab: int, device: torch.device) -> torch.Tensor:
    if device.type == "meta":
        return torch.zeros(batch, length, dtype=torch.long, device=device)
    return torch.randint(0, vocab, (batch, length), device=device)


def _encoder_inputs(model, batch: int, seq_len: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The encoder's input: token ids of seq_len, or the fixed audio window of a Whisper-style encoder."""
    config = model.config
    name = getattr(model, "main_input_name", "input_ids")
    if name == "input_ids":
        return {"input_ids": _token_ids(batch, seq_len, vocab, device)}
    window = audio_window(model) if name == "input_features" else None
    if window is None:
        raise CountingError(f"{config.model_type}: the encoder reads {name}, whose shape auditor cannot derive "
                            f"from the config; count {type(model).__name__} with count_step and inputs of your own")
    return {"input_features": torch.zeros(batch, *window, device=device)}


def decoder_length(model, seq_len: int, decoder_len: int | None, *, audio: bool = False) -> int:
    """The decoder's length: ``decoder_len`` where given, else ``seq_len``; CountingError past the
    decoder's own limit (max_target_positions), which a meta model would not notice.

    Behind an ``audio`` encoder (its input fixed by the config) the sequence length is the
    decoder's, the text tokens a sequence: a different ``decoder_len`` would leave the tokens
    a sequence undefined, and is refused."""
    config = model.config
    if audio and decoder_len and decoder_len != seq_len:
        raise CountingError(f"{config.model_type}: the encoder reads the config's fixed audio window, so the "
                            f"sequence length is the decoder's; got sequence length {seq_len} and decoder length "
                            f"{decoder_len}: give the sequence length alone")
    length = decoder_len or seq_len
    limit = getattr(config, "max_target_positions", None)
    if isinstance(limit, int) and length > limit:
        raise CountingError(f"{config.model_type}: decoder length {length} is past the config's "
                            f"max_target_positions {limit}; give a decoder length of at most {limit}")
    return length


def example_inputs(model: torch.nn.Module, batch: int, seq_len: int, decoder_len: int | None = None) -> dict[str, Any]:
    """Inputs and labels for one training step: the model computes its own loss.

    A decoder-only model reads seq_len tokens. An encoder-decoder's encoder reads seq_len tokens,
    its decoder ``decoder_len`` tokens, else seq_len; a Whisper-style encoder reads its config's
    fixed audio window, and its decoder seq_len tokens."""
    config = model.config
    device = next(model.parameters()).device
    vocab = int(getattr(config, "vocab_size", None) or 2)
    if not is_encoder_decoder(config):
        if decoder_len:
            raise CountingError(f"{config.model_type}: a decoder length was given, but {type(model).__name__} "
                                f"is not an encoder-decoder; give the sequence length alone")
        ids = _token_ids(batch, seq_len, vocab, device)
        return {"input_ids": ids, "labels": ids}
    encoder = _encoder_inputs(model, batch, seq_len, vocab, device)
    length = decoder_length(model, seq_len, decoder_len, audio="input_features" in encoder)
    labels = torch.zeros(batch, length, dtype=torch.long, device=device)
    # Decoder inputs given outright: shifting labels needs a start token not every config has.
    return {**encoder, "decoder_input_ids": labels, "labels": labels}


def describe_inputs(model: torch.nn.Module, inputs: dict[str, Any], seq_len: int, decoder_len: int | None) -> list[str]:
    """What was counted, for the assumptions: the model class and the lengths its stacks ran at."""
    name = type(model).__name__
    if not is_encoder_decoder(model.config):
        return [f"counted transformers {name}"]
    out = [f"counted transformers {name}: encoder and decoder"]
    features = inputs.get("input_features")
    if features is not None:
        mel, frames = features.shape[1:]
        out.append(f"encoder input: the audio window the config fixes, {mel} mel bins x {frames} frames "
                   f"({model.config.max_source_positions} positions after its convolutions); the sequence "
                   f"length is the decoder's (its text tokens)")
    else:
        out.append(f"encoder length {seq_len} (the sequence length)")
    length = inputs["decoder_input_ids"].shape[1]
    out.append(f"decoder length {length}" + (" (given)" if decoder_len else
                                             " (the sequence length: no decoder length given)"))
    return out


def is_transformers_model(model) -> bool:
    """Whether ``model`` is a transformers PreTrainedModel (only then is it named as one). A model
    of that class cannot exist unless transformers was imported, so nothing is imported here."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def name_model(result: StepCount, model: torch.nn.Module, inputs: dict[str, Any], seq_len: int,
               decoder_len: int | None) -> StepCount:
    """``result`` naming the transformers class it counted and the lengths it counted at."""
    result.model_class = type(model).__name__
    result.assumptions.extend(describe_inputs(model, inputs, seq_len, decoder_len))
    return result


def count_hf(config_source: Mapping | str | Path, *, batch: int = 1, seq_len: int | None = None,
             decoder_len: int | None = None, device: str = "meta", repeated_blocks: bool = True,
             max_modules: int | None = None) -> StepCount:
    """FLOPs of one training step of a Hugging Face model built from its config.

    An encoder-decoder counts both stacks: the encoder at ``seq_len`` (a Whisper-style encoder at
    its config's audio window), the decoder at ``decoder_len``, else ``seq_len``; ``tokens`` is
    batch x seq_len either way."""
    config = load_config(config_source)
    if seq_len is None:
        seq_len = default_seq_len(config)
    model = build_model(config, device, max_modules=max_modules)
    inputs = example_inputs(model, batch, seq_len, decoder_len)
    result = count_step(model, inputs, tokens=batch * seq_len, repeated_blocks=repeated_blocks,
                        name=config.model_type)
    result.assumptions.append(f"one step of batch {batch} x sequence length {seq_len}")
    return name_model(result, model, inputs, seq_len, decoder_len)
