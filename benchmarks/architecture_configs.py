"""Tiny-config tables for ``architectures.py``: sizes, per-model overrides, notes.

Kept apart so the sweep's code stays short; every entry says why a model needs it.
"""
from __future__ import annotations

# Generic tiny sizes, applied to every config (and sub-config) field of that name.
SIZES: dict[str, int] = {
    **dict.fromkeys(("vocab_size",), 128),
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "emb_dim", "embedding_dim",
                     "backbone_hidden_size", "router_hidden_size", "projection_dim", "out_hidden_size",
                     "upsample_groups"), 64),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "decoder_ffn_dim", "encoder_ffn_dim", "d_inner", "dim_ff",
                     "dff", "ffn_hidden_size", "feed_forward_size", "dense_intermediate_size",
                     "intermediate_size_mlp"), 128),
    **dict.fromkeys(("moe_intermediate_size", "expert_ffn_hidden_size", "shared_expert_intermediate_size",
                     "shared_intermediate_size", "moe_shared_expert_intermediate_size",
                     "shared_experts_intermediate_size"), 32),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers",
                     "num_decoder_layers", "num_encoder_layers", "depth"), 3),
    # Images of 64 x 64 (4 x 4 patches of 16): the meta count's cost does not depend on them, the
    # CPU check's does. Models that need their own size fall back to the shallow config.
    "image_size": 64, "crop_size": 64,
    "frames_per_clip": 4, "pred_num_hidden_layers": 3,   # V-JEPA 2: 4 frames (2 tubelets), a 3-layer predictor
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads",
                     "encoder_attention_heads", "attention_heads", "num_decoder_attention_heads",
                     "num_encoder_attention_heads", "swa_num_attention_heads"), 4),
    **dict.fromkeys(("num_key_value_heads", "swa_num_key_value_heads"), 2),
    **dict.fromkeys(("head_dim", "swa_head_dim", "index_head_dim", "v_head_dim", "attention_head_size",
                     "linear_key_head_dim", "linear_value_head_dim", "linear_head_dim"), 16),
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"), 8),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "moe_k"), 2),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), 1),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "context_length", "max_seq_len",
                     "max_target_positions"), 128),
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "index_n_heads": 2, "index_topk": 16,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_num_heads": 4,
    "mamba_d_state": 16, "state_size": 16, "ssm_state_size": 16, "mamba_n_heads": 8, "mamba_num_heads": 8,
    "mamba_head_dim": 16, "num_dense_layers": 1,
}

# Per-model fields on top of the generic sizes (sub-configs as nested dicts): what a tiny
# config must also set to build, and layer patterns that hold each kind of layer twice, so the
# repeated-block shortcut is exercised. MLA models need as many key/value heads as heads.
_HYBRID4 = {"num_hidden_layers": 4, "layer_types": ["linear_attention", "full_attention"] * 2}
# Sliding-window layers of dots3 take their sizes from swa_* keywords, not from fields.
_DOTS3 = {"num_key_value_heads": 4, "swa_num_attention_heads": 4, "swa_num_key_value_heads": 4,
          "swa_q_lora_rank": 32, "swa_kv_lora_rank": 16, "swa_head_dim": 16, "swa_qk_nope_head_dim": 8,
          "swa_v_head_dim": 16, "per_layer_config": {}}
_QWEN4 = {"num_hidden_layers": 4, "layer_types": ["linear_attention", "indexed_attention"] * 2,
          "indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 16,
          "indexer_compress_ratio": 4, "ngram_vocab_size_base": 1024}
_MAMBA2 = {"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_chunk_size": 16}
OVERRIDES: dict[str, dict] = {
    **dict.fromkeys(("axk2", "deepseek_v32", "glm_moe_dsa"), {"num_key_value_heads": 4}),
    "dbrx": {"attn_config": {"rope_theta": 1e4, "clip_qkv": 8.0}},
    **dict.fromkeys(("codegen", "gptj"), {"rotary_dim": 8}),
    **dict.fromkeys(("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text", "olmo_hybrid", "minimax"), _HYBRID4),
    **dict.fromkeys(("qwen3_5", "qwen3_5_moe"), {"text_config": _HYBRID4}),
    "qwen4_exp_text": _QWEN4,
    "qwen4_exp": {"text_config": _QWEN4},
    "kimi_linear": _HYBRID4,
    "bailing_hybrid": {**_HYBRID4, "first_k_dense_replace": 0},
    "granitemoehybrid": {**_HYBRID4, **_MAMBA2},
    "bamba": {"num_hidden_layers": 4, "attn_layer_indices": [1, 3], **_MAMBA2},
    "falcon_h1": {"num_hidden_layers": 2, "mamba_d_ssm": 128, **_MAMBA2},
    "jamba": {"num_hidden_layers": 4, "attn_layer_period": 2, "attn_layer_offset": 1,
              "expert_layer_period": 2, "expert_layer_offset": 1},
    "nemotron_h": {"num_hidden_layers": 8, "layer_types": ["linear_attention", "moe", "full_attention", "mlp"] * 2,
                   "mamba_num_heads": 8, "mamba_head_dim": 16, "n_groups": 1, "chunk_size": 16},
    "mamba2": {"num_heads": 8, "head_dim": 16, "n_groups": 1, "chunk_size": 16},
    "zamba": {"num_hidden_layers": 6, "attn_layer_period": 3, "attn_layer_offset": 1},  # 2 shared blocks
    "longcat_flash": {"num_key_value_heads": 4, "head_dim": 8, "zero_expert_num": 4},
    "zamba2": {"num_hidden_layers": 4, "layers_block_type": ["linear_attention", "hybrid"] * 2,
               "n_mamba_heads": 8, "chunk_size": 16},
    "lfm2": {"num_hidden_layers": 4, "full_attn_idxs": [1, 3]},
    "lfm2_moe": {"num_hidden_layers": 4, "layer_types": ["conv", "full_attention"] * 2},
    "lfm3": {"num_hidden_layers": 4, "layer_types": ["conv", "full_attention"] * 2},
    "cohere_compass_text": {"num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention"] * 2,
                            "rope_parameters": {t: {"rope_type": "default", "rope_theta": 1e4}
                                                for t in ("sliding_attention", "full_attention")}},
    "gemma3n_text": {"num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention"] * 2,
                     "num_kv_shared_layers": 2},
    "dots3_note_text": _DOTS3,
    "dots3_note": {"text_config": _DOTS3, "vision_config": {"per_layer_config": {}, "adapter_out_dim": 64,
                                                            "adapter_in_dim": 64},
                   "audio_config": {"adapter_out_dim": 64, "adapter_input_size": 64}},
    "gpt_neo": {"num_layers": 4, "attention_types": [[["global", "local"], 2]]},
    "zaya": {"num_experts_per_tok": 1},
    "reformer": {"is_decoder": True, "axial_pos_embds_dim": [32, 32], "axial_pos_shape": [4, 8]},
    "xlstm": {"use_cache": False, "mode": "train", "chunk_size": 16},
    "xmod": {"default_language": "en_XX"},
    # ESM's default config has no vocabulary, pad or mask token (each checkpoint sets its own)
    "esm": {"pad_token_id": 1, "mask_token_id": 2},
    # DETR-like detectors default to a timm ResNet-50 (timm is not installed): transformers' own ResNet
    **dict.fromkeys(("conditional_detr", "dab-detr", "deformable_detr", "detr", "maskformer", "omdet-turbo",
                     "table-transformer"), {"backbone_config": {"model_type": "resnet", "out_indices": [1, 2, 3, 4]}}),
    # time-series transformers have no default horizon
    **dict.fromkeys(("autoformer", "informer", "time_series_transformer"), {"prediction_length": 8}),
    # 4 x 4 patches pooled to 2 x 2 image tokens (the default 256 tokens need 16 x 16 patches or more)
    **dict.fromkeys(("gemma3", "shieldgemma2"), {"mm_tokens_per_image": 4}),
    # composite encoder-decoders: the decoder must attend to the encoder (else nothing trains it)
    **dict.fromkeys(("encoder-decoder", "speech-encoder-decoder", "vision-encoder-decoder"),
                    {"decoder": {"is_decoder": True, "add_cross_attention": True}}),
}

# Multimodal RoPE: the text head width of 16 rotates 8 pairs, so the three sections (time,
# height, width) must sum to 8, not to the default widths' 64 (set in tiny_config).
MROPE = {**dict.fromkeys(("cohere_compass", "cosmos3_edge", "ernie4_5_vl_moe", "glm4v", "glm4v_moe", "glm_image",
                          "glm_ocr", "hunyuan_vl", "hy_v4_vl", "neomme", "paddleocr_vl", "qwen2_5_omni",
                          "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe", "qwen3_omni_moe", "qwen3_vl",
                          "qwen3_vl_moe", "qwen4_exp"), [2, 3, 3])}

# Config-level ways around what fails on meta for a reason that costs no counted FLOP. (BART's
# and Reformer's boolean checks of their inputs, which needed eager attention and no pad token
# here before, are now answered by the counter itself: see docs/architectures.md.) The CPU
# count of the same model is taken without the workaround, so meta == CPU proves it neutral.
META_WORKAROUNDS: dict[str, dict] = {
    # SpecAugment (training-mode time masking) writes a learned vector into frames picked by a
    # boolean mask: no counted FLOP, but its backward indexes by that mask (nonzero) on meta.
    **dict.fromkeys(("data2vec-audio", "hubert", "sew", "sew-d", "speecht5", "unispeech", "unispeech-sat",
                     "wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "wavlm"), {"apply_spec_augment": False}),
}

# Default configs (``XConfig()``) that transformers cannot build, and the smallest change found
# (by trying) that builds them; the sweep tries each and says whether it still builds.
DEFAULT_FIXES: dict[str, dict] = {
    **dict.fromkeys(("conditional_detr", "dab-detr", "deformable_detr", "detr", "maskformer", "omdet-turbo",
                     "table-transformer"), {"use_timm_backbone": False}),
    **dict.fromkeys(("autoformer", "informer", "time_series_transformer"), {"prediction_length": 24}),
    "esm": {"vocab_size": 33, "pad_token_id": 1, "mask_token_id": 32},   # ESM-2's alphabet
}

# Not standalone causal LMs: listed with their reason, never run.
SKIP = {
    "gemma4_assistant": "draft model for speculative decoding: every layer reads the target model's KV",
    "gemma4_unified_assistant": "draft model for speculative decoding: needs the target's shared KV states",
    "musicgen": "composite config mapped to the decoder-only class: count its musicgen_decoder instead",
    "musicgen_melody": "composite config mapped to the decoder-only class: count its decoder instead",
    "gemma3n": "its vision tower needs the timm package, not installed (gemma3n_text is counted)",
}

# What a reader needs to read a row (known reasons for bwd/fwd != 2, meta-only failures).
_INDEXER = "indexer/compressor matmuls only choose keys (top-k): forward only, no gradient, so bwd/fwd < 2"
_CHUNKED = ("chunked linear attention: decay masks carry no gradient and the chunk recurrence's backward "
            "differs from its forward, so bwd/fwd != 2")
_LOOP = "hand-written loop over the experts hit (nonzero/tolist): cannot run on meta; routed on CPU"
_LOOP_ON_META = ("hand-written loop over the experts hit: counted on meta as tokens x k rows through one "
                 "expert's matmuls (counting/moe.py META_ROUTED), equal to a CPU count with real routing")
_FP32 = "residual_in_fp32: block 0 gets bf16 input, later blocks fp32, so the shortcut falls back (exact)"
NOTES = {
    **dict.fromkeys(("deepseek_v32", "glm_moe_dsa", "axk2", "dots3_note", "dots3_note_text", "deepseek_v4",
                     "hy_v4"), _INDEXER),
    **dict.fromkeys(("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "kimi_linear",
                     "bailing_hybrid", "minimax", "lara_mini", "olmo_hybrid"), _CHUNKED),
    **dict.fromkeys(("dbrx", "jetmoe"), _LOOP_ON_META),
    "longcat_flash": _LOOP + "; zero-computation (identity) experts cost nothing, so experts per token < k",
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba"), _FP32),
    "whisper": "conv1 reads the mel features, which need no gradient: its backward is the weight gradient "
               "alone, so bwd/fwd < 2",
    "hrm_text": "hierarchical recurrence: all but the last cycle run without gradient, so bwd/fwd < 2",
    "reformer": "reversible layers recompute the forward inside backward; counted as backward",
    "xlnet": "builds tensors on CPU inside forward: a meta-only failure",
    "diffllama": "a CPU scalar meets meta tensors in backward: a meta-only failure",
    "xmod": "language adapters pick tokens with a boolean mask (nonzero)",
    **dict.fromkeys(("qwen4_exp", "qwen4_exp_text"), "sparse indexer picks tokens with nonzero"),
    "blt": "transformers bug: its DynamicCache asks BltConfig for num_hidden_layers",
    "xlm": "checks lengths.max().item() <= sequence length: an integer read of data",
    **dict.fromkeys(("conditional_detr", "deformable_detr", "detr", "grounding-dino", "mm-grounding-dino",
                     "table-transformer"),
                    "transformers freezes every parameter of a native ResNet backbone (its check keeps names with "
                    "`stage.1`-`stage.3`, which read `stages.1`), so the backbone has no backward: bwd/fwd far below 2"),
    "slanet": "decoder loop exits early on data: meta answers the exit check True after step 1 (defect 4)",
    "slanext": "decoder loop exits early on data: meta answers the exit check True after step 1 (defect 4)",
    "squeezebert": "its encoder calls layer.forward() directly, which the shortcut's hooks do not see (defect 3)",
    "informer": "its encoder's conv_layers ModuleList ends with None (defect 1)",
    **dict.fromkeys(("pocket_tts", "gradium_phonon_tts"), "an mm output reshaped in place poisons the meta cache (defect 5)"),
}

# Families by model type; everything else is dense, or MoE when its config has experts.
FAMILY = {
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba"), "SSM"),
    **dict.fromkeys(("jamba", "zamba", "zamba2", "falcon_h1", "bamba", "nemotron_h", "granitemoehybrid",
                     "lfm2", "lfm2_moe", "lfm3", "bailing_hybrid", "olmo_hybrid"), "SSM-hybrid"),
    **dict.fromkeys(("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "kimi_linear",
                     "minimax"), "linear-attn hybrid"),
    **dict.fromkeys(("rwkv", "recurrent_gemma", "xlstm"), "recurrent"),
}
