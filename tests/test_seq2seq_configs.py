"""Encoder-decoder configs build their whole sequence-to-sequence model, counted against closed forms.

Twelve transformers model types sit in both AutoModelForCausalLM's mapping and a
sequence-to-sequence one; the causal LM class is their decoder alone. Each expected integer
here is derived from the config, one term per matmul (a multiply-add is 2 FLOPs):

- a linear layer over t tokens: 2 t in out;
- attention over the full context, heads x head size = d: QK^T and AV are 2 q k d each for q
  query and k key positions (docs/counting.md: causal masking is an assumption, not a discount);
- embedding lookups (token and position) are free;
- backward: twice the forward for every matmul whose input needs a gradient. Token embeddings are
  trainable, so every layer's input needs one; only Whisper's first convolution reads data (the
  mel features), so its backward is the weight gradient alone, once its forward.
"""
from __future__ import annotations

import json

import pytest
import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSpeechSeq2Seq,
)
from transformers.models.auto import modeling_auto

from auditor.counting import CountingError
from auditor.counting.hf import count_hf, load_config, model_class
import helpers

D, HEADS, ENC_LAYERS, DEC_LAYERS, ENC_FFN, DEC_FFN, V = 64, 4, 2, 3, 128, 96, 100
S, T = 12, 7  # encoder and decoder lengths, different so that a swap is caught

# Special tokens inside the tiny vocabulary (Marian's and Whisper's defaults are past it).
TOKENS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
          "forced_eos_token_id": 2}
TEXT_SEQ2SEQ = {
    "bart": "BartForConditionalGeneration",
    "marian": "MarianMTModel",
    "mbart": "MBartForConditionalGeneration",
    "pegasus": "PegasusForConditionalGeneration",
    "blenderbot": "BlenderbotForConditionalGeneration",
    "blenderbot-small": "BlenderbotSmallForConditionalGeneration",
    "plbart": "PLBartForConditionalGeneration",
    "mvp": "MvpForConditionalGeneration",
}


def bart_like(model_type: str, **extra) -> dict:
    return {"model_type": model_type, "d_model": D, "encoder_layers": ENC_LAYERS, "decoder_layers": DEC_LAYERS,
            "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "encoder_ffn_dim": ENC_FFN,
            "decoder_ffn_dim": DEC_FFN, "vocab_size": V, "max_position_embeddings": 64, **TOKENS, **extra}


def encoder_layer(s: int) -> int:
    """Forward FLOPs of one encoder layer over s positions (batch 1)."""
    return (2 * s * 4 * D * D           # q, k, v, o projections
            + 2 * 2 * s * s * D         # QK^T and AV, heads x head size = D
            + 2 * s * 2 * D * ENC_FFN)  # fc1, fc2


def decoder_layer(t: int, s: int) -> int:
    """Forward FLOPs of one decoder layer: t decoder positions, s encoder positions."""
    return (2 * t * 4 * D * D + 2 * 2 * t * t * D    # self-attention
            + 2 * t * 2 * D * D                      # cross-attention q and o, on decoder positions
            + 2 * s * 2 * D * D                      # cross-attention k and v, on the encoder's output
            + 2 * 2 * t * s * D                      # cross-attention QK^T and AV
            + 2 * t * 2 * D * DEC_FFN)               # fc1, fc2


def seq2seq_forward(s: int, t: int) -> int:
    """Encoder layers + decoder layers + the LM head over the decoder's t positions."""
    return ENC_LAYERS * encoder_layer(s) + DEC_LAYERS * decoder_layer(t, s) + 2 * t * D * V


def count_both_ways(config: dict, **kw):
    """The count with the repeated-block shortcut, checked equal, record by record, to the full one."""
    fast = count_hf(config, **kw)
    full = count_hf(config, repeated_blocks=False, **kw)
    assert fast.records == full.records
    assert fast.complete and full.complete
    return fast


@pytest.mark.parametrize("model_type", TEXT_SEQ2SEQ)
def test_text_encoder_decoder_counts_both_stacks(model_type):
    r = count_both_ways(bart_like(model_type), seq_len=S, decoder_len=T)
    fwd = seq2seq_forward(S, T)
    assert r.forward == fwd
    assert r.backward == 2 * fwd
    assert r.model_class == TEXT_SEQ2SEQ[model_type]
    assert f"counted transformers {TEXT_SEQ2SEQ[model_type]}: encoder and decoder" in r.assumptions
    assert f"encoder length {S} (the sequence length)" in r.assumptions
    assert f"decoder length {T} (given)" in r.assumptions
    assert r.tokens == S


def test_decoder_length_defaults_to_the_encoders_and_says_so():
    r = count_hf(bart_like("bart"), seq_len=S)
    assert r.forward == seq2seq_forward(S, S)
    assert f"decoder length {S} (the sequence length: no decoder length given)" in r.assumptions


def test_the_causal_class_is_the_decoder_alone():
    """The defect this guards against: AutoModelForCausalLM builds BART's decoder alone, with no
    encoder and no cross-attention (its layers run without encoder states)."""
    import torch

    from auditor.counting import count_step
    from auditor.counting.hf import example_inputs

    config = load_config(bart_like("bart"))
    assert model_class(config) is AutoModelForSeq2SeqLM
    with torch.device("meta"):
        decoder = AutoModelForCausalLM.from_config(config)
    # without a cache: transformers sizes BART's DynamicCache by num_hidden_layers (the encoder's
    # depth), so the decoder alone, one layer deeper, cannot run with one
    alone = count_step(decoder, {**example_inputs(decoder, 1, S), "use_cache": False})
    self_attention_and_ffn = 2 * S * 4 * D * D + 2 * 2 * S * S * D + 2 * S * 2 * D * DEC_FFN
    assert alone.forward == DEC_LAYERS * self_attention_and_ffn + 2 * S * D * V
    assert count_hf(bart_like("bart"), seq_len=S).forward == seq2seq_forward(S, S) > 2 * alone.forward


# --- Whisper: a speech encoder over the config's fixed audio window

MEL, POSITIONS = 8, 10   # mel bins; encoder positions after the convolutions (frames = 2 x positions)


def whisper_config(**extra) -> dict:
    return {"model_type": "whisper", "d_model": D, "encoder_layers": ENC_LAYERS, "decoder_layers": DEC_LAYERS,
            "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "encoder_ffn_dim": ENC_FFN,
            "decoder_ffn_dim": DEC_FFN, "vocab_size": V, "num_mel_bins": MEL, "max_source_positions": POSITIONS,
            "max_target_positions": 32, "suppress_tokens": [], "begin_suppress_tokens": [], **TOKENS, **extra}


def test_whisper_counts_its_audio_encoder_and_decoder():
    r = count_both_ways(whisper_config(), seq_len=T)
    frames = 2 * POSITIONS                         # conv1 stride 1, conv2 stride 2
    conv1 = 2 * frames * D * MEL * 3               # Conv1d(mel, d, kernel 3, padding 1): frames outputs
    conv2 = 2 * POSITIONS * D * D * 3              # Conv1d(d, d, kernel 3, stride 2): positions outputs
    fwd = conv1 + conv2 + seq2seq_forward(POSITIONS, T)
    assert r.forward == fwd
    # conv1 reads the mel features, which need no gradient: its backward is the weight gradient only
    assert r.backward == 2 * fwd - conv1
    assert r.model_class == "WhisperForConditionalGeneration"
    assert any(a.startswith(f"encoder input: the audio window the config fixes, {MEL} mel bins x {frames} frames")
               for a in r.assumptions)
    assert f"decoder length {T} (the sequence length: no decoder length given)" in r.assumptions


def test_whisper_decoder_lengths_it_cannot_run_are_refused():
    with pytest.raises(CountingError, match="decoder length 40 is past the config's max_target_positions 32"):
        count_hf(whisper_config(), seq_len=40)
    with pytest.raises(CountingError, match="the sequence length is the decoder's"):
        count_hf(whisper_config(), seq_len=T, decoder_len=T - 1)


def test_a_speech_encoder_of_unknown_input_shape_is_refused_not_guessed():
    with pytest.raises(CountingError, match="speech_to_text: the encoder reads input_features, whose shape"):
        count_hf({"model_type": "speech_to_text", "d_model": D, "encoder_layers": 1, "decoder_layers": 1,
                  "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "vocab_size": V,
                  **TOKENS}, seq_len=S)


# --- which class each model type builds

def test_every_encoder_decoder_type_in_the_causal_mapping_builds_its_seq2seq_class():
    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    seq2seq = {**modeling_auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
               **modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}
    both = sorted(set(causal) & set(seq2seq))
    assert {"bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "mvp", "pegasus",
            "plbart", "prophetnet", "whisper"} <= set(both)
    for model_type in both:
        config = load_config({"model_type": model_type})
        auto = model_class(config)
        built = auto._model_mapping[type(config)].__name__
        assert built == seq2seq[model_type], model_type
        if built != causal[model_type]:           # moss_transcribe_diarize has one class for both
            assert auto in (AutoModelForSeq2SeqLM, AutoModelForSpeechSeq2Seq), model_type


@pytest.mark.parametrize("model_type,expected", [("gpt2", "GPT2LMHeadModel"), ("llama", "LlamaForCausalLM")])
def test_causal_only_types_are_unchanged(model_type, expected):
    config = {"gpt2": {"n_embd": D, "n_layer": 2, "n_head": HEADS, "vocab_size": V, "n_positions": 32},
              "llama": {"hidden_size": D, "intermediate_size": 160, "num_hidden_layers": 2,
                        "num_attention_heads": HEADS, "num_key_value_heads": 2, "vocab_size": V}}[model_type]
    assert model_class(load_config({"model_type": model_type, **config})) is AutoModelForCausalLM
    r = count_hf({"model_type": model_type, **config}, seq_len=S)
    if model_type == "gpt2":    # c_attn (3 d), c_proj, c_fc (4 d), mlp c_proj per layer
        layer = 2 * S * (D * 3 * D + D * D + D * 4 * D + 4 * D * D) + 2 * 2 * S * S * D
    else:                       # q, k and v (2 kv heads of 16), o, gate/up/down of 160
        layer = 2 * S * (D * D + 2 * D * 2 * 16 + D * D + 3 * D * 160) + 2 * 2 * S * S * D
    assert r.forward == 2 * layer + 2 * S * D * V
    assert r.backward == 2 * r.forward
    assert r.model_class == expected and f"counted transformers {expected}" in r.assumptions
    with pytest.raises(CountingError, match="not an encoder-decoder"):
        count_hf({"model_type": model_type, **config}, seq_len=S, decoder_len=T)


def test_an_encoder_decoder_with_only_a_decoder_class_is_refused():
    with pytest.raises(CountingError, match="musicgen: an encoder-decoder config with no sequence-to-sequence "
                                            "class in transformers; its causal LM, MusicgenForCausalLM"):
        model_class(load_config({"model_type": "musicgen"}))


# --- the command line and the run config

def invoke(*args):
    """(exit code, stdout, stderr without the progress lines such as '... building the model')."""
    result = helpers.invoke(*args)
    errors = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("... "))
    return result.exit_code, result.stdout, errors


def test_count_command_names_the_class_and_takes_a_decoder_length(tmp_path):
    path = tmp_path / "bart.json"
    path.write_text(json.dumps(bart_like("bart")))
    code, out, _ = invoke("count", path, "--seq-len", S, "--decoder-len", T, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["model_class"] == "BartForConditionalGeneration"
    assert data["total_flops"] == 3 * seq2seq_forward(S, T)


def run_config(tmp_path, hf_config: dict, **data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"run": "seq2seq", "model": {"hf_config": hf_config}, "data": data}))
    return str(path)


def test_preflight_counts_the_decoder_at_data_decoder_len(tmp_path):
    code, out, _ = invoke("preflight", run_config(tmp_path, bart_like("marian"), tokens=S * 100, seq_len=S,
                                                  decoder_len=T), "--format", "json")
    assert code in (0, 1)
    counted = next(e for e in json.loads(out)["estimates"] if e["method"] == "counted")
    assert counted["details"]["sequence_flops"] == 3 * seq2seq_forward(S, T)
    assert counted["flops"] == 100 * 3 * seq2seq_forward(S, T)      # tokens / seq_len = 100 sequences
    assert "counted transformers MarianMTModel: encoder and decoder" in counted["assumptions"]
    assert f"decoder length {T} (given)" in counted["assumptions"]


def test_preflight_refuses_a_decoder_length_for_a_decoder_only_model(tmp_path):
    llama = {"model_type": "llama", "hidden_size": D, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": HEADS, "num_key_value_heads": 2, "vocab_size": V}
    code, _, err = invoke("preflight", run_config(tmp_path, llama, tokens=1000, seq_len=S, decoder_len=T))
    assert code == 2
    assert "data.decoder_len: got 7; expected decoder_len only for a Hugging Face encoder-decoder" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_config_decoder_len_needs_seq_len(tmp_path):
    code, _, err = invoke("preflight", run_config(tmp_path, bart_like("bart"), tokens=1000, decoder_len=T))
    assert code == 2
    assert "decoder_len" in err and "expected decoder_len only with seq_len" in err
