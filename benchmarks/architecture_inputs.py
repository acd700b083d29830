"""Training heads and example inputs for every kind of model the architecture sweep builds.

``architectures.py`` counts one training step of each transformers model type. A causal,
text sequence-to-sequence or speech sequence-to-sequence config goes through ``count_hf``
itself (its own class and inputs, unchanged). Every other type gets the head of the first auto
mapping below that holds it, and inputs of the kind that head reads:

- token ids (batch x SEQ), with labels for a language-model head;
- ``pixel_values`` of the config's image size and channels (its vision sub-config's where it
  has one), and ``image_grid_thw`` patches for Qwen2-VL-style flattened inputs;
- ``input_values`` (one second of 16 kHz audio) or ``input_features`` (a Whisper-style
  encoder's fixed window, else FRAMES frames of the config's feature width);
- both, for a multimodal LM, with as many placeholder tokens (image, video, audio) as the model
  asks for: the sweep runs the model once uncounted and reads, at ``get_placeholder_mask`` (the
  check 101 transformers models make that tokens and features agree), how many features of
  each kind the towers produced; on meta that check itself is answered True (a boolean read),
  so the CPU count of every multimodal row is what proves the number right.

A training step is forward + backward of the model's own loss where its head takes labels
(class 0 for a classifier, the input ids for a language model, contrastive for CLIP-like dual
encoders), else of a sum of its outputs (``auditor.counting.step.default_loss``). Inputs are
tried in order; the first set the model runs with (an uncounted forward) is counted.
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import torch

BATCH, SEQ = 1, 32
AUDIO_SAMPLES = 16_000   # one second at 16 kHz
FRAMES = 64              # spectrogram frames where the config does not fix them

# Auto mappings in the order a type's training head is chosen; the first that holds it wins.
# (task label, mapping name in transformers.models.auto.modeling_auto, labels kind)
HEADS: tuple[tuple[str, str, str | None], ...] = (
    ("multimodal LM", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "tokens"),
    ("multimodal LM", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "tokens"),
    ("causal LM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "count_hf"),
    ("seq2seq", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "count_hf"),
    ("speech seq2seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "count_hf"),
    ("contrastive", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", "contrastive"),
    ("speech CTC", "MODEL_FOR_CTC_MAPPING_NAMES", "ctc"),
    ("audio classification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "class"),
    ("image classification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "class"),
    ("masked LM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "tokens"),
    ("base model", "MODEL_MAPPING_NAMES", None),
)


def _mappings():
    from transformers.models.auto import modeling_auto

    return modeling_auto


def all_types() -> list[str]:
    """Every model type in any of transformers' auto model mappings."""
    auto = _mappings()
    types: set[str] = set()
    for name in dir(auto):
        if name.endswith("_MAPPING_NAMES") and name != "CONFIG_MAPPING_NAMES":
            types |= set(getattr(auto, name))
    return sorted(types)


def unmapped_config_types() -> list[str]:
    """Config types no auto model mapping holds (sub-configs of composite models, mostly)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(set(CONFIG_MAPPING_NAMES) - set(all_types()))


def head(model_type: str) -> tuple[str, str, str | None]:
    """(task, class name, labels kind) of the head a type is trained with."""
    auto = _mappings()
    for task, mapping, labels in HEADS:
        names = getattr(auto, mapping, {})
        if model_type in names:
            cls = names[model_type]
            if mapping == "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES":
                cls = auto.MODEL_MAPPING_NAMES.get(model_type, cls)   # the dual encoder, trained contrastively
            return task, cls[0] if isinstance(cls, (list, tuple)) else cls, labels
    for mapping in sorted(n for n in dir(auto) if n.endswith("_MAPPING_NAMES") and n != "CONFIG_MAPPING_NAMES"):
        names = getattr(auto, mapping)
        if model_type in names:
            cls = names[model_type]
            task = mapping.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower().replace("_", " ")
            return task, cls[0] if isinstance(cls, (list, tuple)) else cls, None
    raise KeyError(model_type)


def mappings_of(model_type: str) -> list[str]:
    """The auto mappings that hold a type."""
    auto = _mappings()
    return [n for n in dir(auto) if n.endswith("_MAPPING_NAMES") and n != "CONFIG_MAPPING_NAMES"
            and model_type in getattr(auto, n)]


def head_class(name: str):
    import transformers

    return getattr(transformers, name)


# ---------------------------------------------------------------- shapes from the config


def _configs(config) -> Iterator[Any]:
    """The config, then its vision, audio and other sub-configs (one level, then two)."""
    yield config
    subs = [getattr(config, n, None) for n in ("vision_config", "audio_config", "encoder_config",
                                               "backbone_config", "image_config", "speech_config", "encoder")]
    for sub in subs:
        if sub is not None and hasattr(sub, "to_dict"):
            yield sub
    for sub in subs:
        for n in ("vision_config", "backbone_config", "encoder_config"):
            inner = getattr(sub, n, None) if sub is not None else None
            if inner is not None and hasattr(inner, "to_dict"):
                yield inner


def _first(config, keys: tuple[str, ...], vision_first: bool = True):
    configs = list(_configs(config))
    if vision_first:
        configs = configs[1:] + configs[:1]
    for c in configs:
        for key in keys:
            v = getattr(c, key, None)
            if v is not None and not isinstance(v, bool):
                return v
    return None


def image_hw(config) -> tuple[int, int]:
    """An image's height and width: the config's image_size (int, pair or dict), else 224."""
    size = _first(config, ("image_size", "img_size", "input_size", "crop_size"))
    if isinstance(size, dict):
        size = (size.get("height") or size.get("shortest_edge"), size.get("width") or size.get("shortest_edge"))
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) >= 2 and all(isinstance(s, int) for s in size[-2:]):
        return int(size[-2]), int(size[-1])
    return 224, 224


def channels(config) -> int:
    c = _first(config, ("num_channels", "in_channels", "in_chans", "input_channels", "num_input_channels"))
    return c if isinstance(c, int) and 0 < c < 64 else 3


def _int(config, keys, default=None, vision_first=True):
    v = _first(config, keys, vision_first)
    return v if isinstance(v, int) else default


# ---------------------------------------------------------------- tensors


def _special_ids(config) -> set[int]:
    out: set[int] = set()

    def walk(d: dict) -> None:
        for k, v in d.items():
            k = str(k)
            if isinstance(v, dict):
                walk(v)
            elif ("token" in k or k.endswith("_index") or k.endswith("_id")) and isinstance(v, int) \
                    and not isinstance(v, bool):
                out.add(v)
            elif ("token" in k) and isinstance(v, list):
                out.update(x for x in v if isinstance(x, int) and not isinstance(x, bool))
    walk(config.to_dict())
    return out


def text_vocab(config) -> int:
    for c in (getattr(config, "text_config", None), config, getattr(config, "decoder", None)):
        v = getattr(c, "vocab_size", None) if c is not None else None
        if isinstance(v, int) and v > 1:
            return v
    return 2


def token_ids(config, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """n text token ids: zeros on meta (no data); on a real device random ids that are no special
    token (a placeholder id among them would change what the model computes)."""
    if device.type == "meta":
        return torch.zeros(BATCH, n, dtype=torch.long, device=device)
    vocab = text_vocab(config)
    allowed = [i for i in range(1, min(vocab, 4096)) if i not in _special_ids(config)] or [0]
    pick = torch.randint(0, len(allowed), (BATCH, n), generator=generator)
    return torch.tensor(allowed)[pick].to(device)


def _float(shape, device: torch.device) -> torch.Tensor:
    if device.type == "meta":
        return torch.zeros(shape, device=device)
    return torch.randn(shape, device=device)


def pixel_values(config, device: torch.device) -> torch.Tensor:
    h, w = image_hw(config)
    return _float((BATCH, channels(config), h, w), device)


def grid_patches(config, device: torch.device) -> dict[str, torch.Tensor]:
    """Qwen2-VL-style flattened patches: a 1 x 8 x 8 grid of patches (16 tokens after a 2x2 merge)."""
    p = _int(config, ("patch_size", "spatial_patch_size"), 14)
    t = _int(config, ("temporal_patch_size",), 2)
    merge = _int(config, ("spatial_merge_size", "merge_size"), 2)
    side = 4 * merge
    c = channels(config)
    return {"pixel_values": _float((side * side, c * t * p * p), device),
            "image_grid_thw": torch.tensor([[1, side, side]], device=device)}


def feature_width(config) -> int | None:
    return _int(config, ("feature_projection_input_dim", "num_mel_bins", "num_mel_filters", "feature_size",
                         "input_feat_per_channel", "n_mels",
                         "input_dim", "mel_bins", "audio_channels"), None, vision_first=True)


def audio_candidates(model, name: str, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Spectrogram or waveform inputs to try, most likely first."""
    from auditor.counting.hf import audio_window

    config = model.config
    if name == "input_values":
        cands = [{"input_values": _float((BATCH, AUDIO_SAMPLES), device)},
                 {"input_values": _float((BATCH, 1, AUDIO_SAMPLES), device)}]
        width = feature_width(config)
        if width:   # spectrogram patches read as input_values (AST): its max_length frames
            frames = _int(config, ("max_length",), FRAMES) or FRAMES
            cands.append({"input_values": _float((BATCH, frames, width), device)})
        return cands
    window = audio_window(model)
    if window is not None:
        return [{name: _float((BATCH, *window), device)}]
    width = feature_width(config) or 80
    per_channel = _int(config, ("input_channels",), 1)
    if getattr(config, "input_feat_per_channel", None):
        width = config.input_feat_per_channel * per_channel
    out = [{name: _float((BATCH, FRAMES, width), device)}, {name: _float((BATCH, width, FRAMES), device)},
           {name: _float((BATCH, 1, width, FRAMES), device)}]
    positions = _int(config, ("max_source_positions",), None)
    if positions:   # a Whisper-like encoder behind another name (Voxtral's audio tower): 2 frames a position
        out.append({name: _float((BATCH, width, 2 * positions), device)})
    return out


# ---------------------------------------------------------------- placeholders of multimodal models


class Probe(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops a forward dispatches (how far it got before failing) and the rows each
    ``masked_scatter`` writes into the embeddings (features merged without a checked count)."""

    def __init__(self):
        super().__init__()
        self.ops, self.scattered = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func in (torch.ops.aten.masked_scatter.default, torch.ops.aten.masked_scatter_.default) and len(args) > 2:
            width = args[0].shape[-1] if args[0].dim() else 0
            if width:
                self.scattered.append(args[2].numel() // width)
        return func(*args, **(kwargs or {}))


# Methods that check placeholder tokens against features and merge them (Idefics' inputs_merger)
_MERGERS = ("get_placeholder_mask", "inputs_merger")


@contextlib.contextmanager
def placeholder_counts(model) -> Iterator[dict[str, int]]:
    """While active, every get_placeholder_mask call records how many tokens each kind of
    features needs (its elements over the text embedding width), by argument name; a call
    with no features at all (BLIP-2 checks none) is recorded under "unchecked"."""
    seen: dict[str, int] = {}
    patched = []
    for mod, method in ((m, n) for m in model.modules() for n in _MERGERS):
        original = getattr(type(mod), method, None)
        if original is None or method in vars(mod):
            continue
        signature = inspect.signature(original)

        def wrapper(*args, _original=original, _mod=mod, _sig=signature, **kwargs):
            bound = _sig.bind(_mod, *args, **kwargs)
            embeds = bound.arguments.get("inputs_embeds")
            width = embeds.shape[-1] if isinstance(embeds, torch.Tensor) else None
            found = False
            for key, value in bound.arguments.items():
                tensors = value if isinstance(value, (list, tuple)) else [value]
                if key in ("self", "input_ids", "inputs_embeds") or not width or not tensors \
                        or not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
                    continue
                kind = next((f"{m}_features" for m in ("image", "video", "audio") if m in key), "features")
                seen[kind] = seen.get(kind, 0) + sum(t.numel() for t in tensors) // width
                found = True
            if not found:
                seen["unchecked"] = seen.get("unchecked", 0) + 1
            return _original(_mod, *args, **kwargs)

        setattr(mod, method, wrapper)
        patched.append((mod, method))
    try:
        yield seen
    finally:
        for mod, method in patched:
            delattr(mod, method)


def needed_placeholders(seen: dict[str, int], probe: Probe) -> dict[str, int]:
    """Placeholder tokens by kind: as get_placeholder_mask saw the features, else (a model that
    checks no count) as many as the image features masked_scatter wrote."""
    out = {k: v for k, v in seen.items() if k != "unchecked"}
    if seen.get("unchecked") and not out and probe.scattered:
        out["image_features"] = probe.scattered[0]
    return out


_PLACEHOLDER_FIELDS = {
    "image_features": ("image_token_id", "image_token_index", "image_token", "img_token_id", "image_pad_token_id"),
    "video_features": ("video_token_id", "video_token_index"),
    "audio_features": ("audio_token_id", "audio_token_index", "audio_pad_token_id"),
}
_PLACEHOLDER_FIELDS["features"] = _PLACEHOLDER_FIELDS["image_features"] + _PLACEHOLDER_FIELDS["audio_features"]


def placeholder_id(config, kind: str) -> int | None:
    for c in (config, getattr(config, "text_config", None)):
        for key in _PLACEHOLDER_FIELDS.get(kind, ()):
            v = getattr(c, key, None) if c is not None else None
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def with_placeholders(config, counts: dict[str, int], device: torch.device, generator=None) -> torch.Tensor:
    """Token ids: each kind's placeholders, then SEQ text tokens."""
    parts = []
    for kind, n in counts.items():
        tok = placeholder_id(config, kind)
        if tok is None:
            raise LookupError(f"no token id for {kind} in the config")
        parts.append(torch.full((BATCH, n), tok, dtype=torch.long, device=device))
    parts.append(token_ids(config, SEQ, device, generator))
    return torch.cat(parts, dim=1)


# ---------------------------------------------------------------- one step's inputs


def _params(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def image_candidates(model, device: torch.device) -> list[dict[str, Any]]:
    """(batch, C, H, W) images, with their sizes where the forward takes them, then the 5-D
    layouts: (batch, images, C, H, W) for tiled inputs, (batch, frames, C, H, W) for video."""
    config, params = model.config, _params(model)
    if "image_grid_thw" in params:
        return [grid_patches(config, device)]
    image = pixel_values(config, device)
    h, w = image_hw(config)
    sizes = {"image_sizes": torch.tensor([[h, w]], device=device)} if "image_sizes" in params else {}
    frames = _int(config, ("num_frames", "frames_per_clip", "num_frames_per_clip"), None)
    out = []
    tiles = getattr(sys.modules.get(type(model).__module__), "image_size_to_num_patches", None)
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if sizes and tiles is not None and pinpoints:   # LLaVA-NeXT's any-resolution tiles, as its processor cuts them
        n = tiles((h, w), pinpoints, image_hw(config)[0])
        out.append({"pixel_values": image.unsqueeze(1).expand(-1, n, -1, -1, -1).contiguous(), **sizes})
    if frames:
        out.append({"pixel_values": image.unsqueeze(1).expand(-1, frames, -1, -1, -1).contiguous()})
    out += [{"pixel_values": image}, {"pixel_values": image.unsqueeze(1)}]
    if sizes:
        out += [{"pixel_values": image, **sizes}, {"pixel_values": image.unsqueeze(1), **sizes}]
    return out


def series_candidates(model, device: torch.device) -> list[dict[str, Any]]:
    """Time series: context_length (plus the largest lag) past values, their time features and
    observed mask, and prediction_length future values where the forward takes them (its loss)."""
    config, params = model.config, _params(model)
    ctx = _int(config, ("context_length", "context_len"), 64) or 64
    lags = getattr(config, "lags_sequence", None) or [0]
    n = ctx + max(lags)
    ch = _int(config, ("input_size", "num_input_channels"), 1)
    pred = _int(config, ("prediction_length", "horizon_length"), 8) or 8
    feats = (_int(config, ("num_time_features",), 0) or 0) + (_int(config, ("num_dynamic_real_features",), 0) or 0)
    out = []
    for shape, fshape in (((BATCH, n, ch), (BATCH, pred, ch)), ((BATCH, n), (BATCH, pred))):
        if ch != 1 and len(shape) == 2:
            continue
        inp = {"past_values": _float(shape, device)}
        if "past_observed_mask" in params:
            inp["past_observed_mask"] = torch.ones(shape, device=device)
        if "past_time_features" in params:
            inp["past_time_features"] = _float((BATCH, n, feats), device)
        if "future_values" in params:
            inp["future_values"] = _float(fshape, device)
        if "future_time_features" in params:
            inp["future_time_features"] = _float((BATCH, pred, feats), device)
        out.append(inp)
    return out


def _required(model) -> set[str]:
    """The forward's parameters without a default."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return set()
    return {n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def modality_candidates(model, device: torch.device) -> list[dict[str, Any]]:
    """Non-text inputs to try: for the model's main input, else the first medium its forward
    accepts (an omni model's images, not its audio too)."""
    params = _params(model)
    main = getattr(model, "main_input_name", "input_ids")
    main = main[0] if isinstance(main, (list, tuple)) else main
    required = _required(model)
    if {"states", "actions", "returns_to_go"} <= params:   # a decision transformer's trajectory
        c = model.config
        return [{"states": _float((BATCH, SEQ, c.state_dim), device), "actions": _float((BATCH, SEQ, c.act_dim), device),
                 "rewards": _float((BATCH, SEQ, 1), device), "returns_to_go": _float((BATCH, SEQ, 1), device),
                 "timesteps": torch.zeros(BATCH, SEQ, dtype=torch.long, device=device)}]
    grid = next((g for g in ("grid_thw", "image_grid_thw") if g in required), None)
    if grid and ("hidden_states" in required or "pixel_values" in required):
        # A Qwen2-VL-style vision tower alone: flattened patches and their grid
        patches = grid_patches(model.config, device)
        name = "hidden_states" if "hidden_states" in required else "pixel_values"
        return [{name: patches["pixel_values"], grid: patches["image_grid_thw"]}]
    if main == "flattened_patches":   # Pix2Struct: 16 patches, each its row, column and pixels
        width = _int(model.config, ("patch_embed_hidden_size",), 768)
        return [{"flattened_patches": torch.zeros(BATCH, 16, width + 2, device=device)}]   # row, column ids 0
    if main == "past_values":
        return series_candidates(model, device)
    if main == "pixel_values_videos":
        frames = _int(model.config, ("num_frames", "frames_per_clip"), 8) or 8
        image = pixel_values(model.config, device)
        return [{"pixel_values_videos": image.unsqueeze(1).expand(-1, frames, -1, -1, -1).contiguous()}]
    media = []
    for name in ("pixel_values", "input_features", "input_values"):
        if name in params or main == name:
            media.append((name, image_candidates(model, device) if name == "pixel_values"
                          else audio_candidates(model, name, device)))
    media.sort(key=lambda m: m[0] != main)
    return list(media[0][1]) if media else [{}]


def labels_for(model, kind: str | None, inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    params = _params(model)
    if kind == "contrastive" and "return_loss" in params:
        return {"return_loss": True}
    if "labels" not in params or kind is None:
        return {}
    if kind == "tokens" and "input_ids" in inputs:
        return {"labels": inputs["input_ids"]}
    if kind == "class":
        return {"labels": torch.zeros(BATCH, dtype=torch.long, device=device)}
    if kind == "ctc":
        return {"labels": torch.ones(BATCH, 4, dtype=torch.long, device=device)}
    return {}


def candidates(model, kind: str | None, device: torch.device, generator=None) -> list[dict[str, Any]]:
    """Input sets to try, most likely first: media, then text (and labels) where the forward reads it."""
    config = model.config
    params = _params(model)
    main = getattr(model, "main_input_name", "input_ids")
    wants_text = "input_ids" in params and (main == "input_ids" or kind in ("tokens", "contrastive"))
    out = []
    for media in modality_candidates(model, device) if main != "inputs" else [{}]:
        inputs = dict(media)
        if wants_text:
            inputs["input_ids"] = token_ids(config, SEQ, device, generator)
        if wants_text and "bbox" in params:   # one box per word (LayoutLM, LiLT, BROS: 4 or dim_bbox coordinates)
            dims = getattr(config, "dim_bbox", 4)
            inputs["bbox"] = torch.zeros(BATCH, SEQ, dims, dtype=torch.long if dims == 4 else torch.float, device=device)
        if main == "inputs":   # Perceiver, SpeechEncoderDecoder: tokens, images or audio under another name
            name = type(model).__name__
            inputs["inputs"] = pixel_values(config, device) if "Image" in name else \
                _float((BATCH, AUDIO_SAMPLES), device) if "Speech" in name else token_ids(config, SEQ, device, generator)
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params and main != "input_ids":
            inputs["decoder_input_ids"] = token_ids(config, SEQ, device, generator)
            if "labels" in params and kind is not None:
                inputs["labels"] = inputs["decoder_input_ids"]
        labelled = {**inputs, **labels_for(model, kind, inputs, device)} if "labels" not in inputs else inputs
        out.append(labelled)
        if labelled is not inputs and labelled != inputs:
            out.append(inputs)       # without labels: a loss of the outputs' sum
    return out


def placed(model, inputs: dict[str, Any], counts: dict[str, int], kind: str | None, device: torch.device,
           generator=None) -> dict[str, Any]:
    """``inputs`` with the placeholder tokens ``counts`` asks for in front of the text."""
    if not counts or "input_ids" not in inputs:
        return inputs
    out = dict(inputs)
    out["input_ids"] = with_placeholders(model.config, counts, device, generator)
    if "labels" in inputs and inputs["labels"] is inputs["input_ids"]:
        out["labels"] = out["input_ids"]
    if "mm_token_type_ids" in _params(model):
        image = placeholder_id(model.config, "image_features")
        out["mm_token_type_ids"] = (out["input_ids"] == image).long() if image is not None else None
    if "token_type_ids" in _params(model) and "token_type_ids" not in inputs:
        out["token_type_ids"] = torch.zeros_like(out["input_ids"])   # PaliGemma's training mode asks for them
    return out


def nested_sum(output: Any) -> torch.Tensor:
    """The sweep's loss: the model's own where it returns one, else the sum of every output tensor
    that requires grad, nested ones included (a backbone's feature maps, V-JEPA 2's predictor
    output), where ``default_loss`` reads the top level alone (defect 7 in docs/architectures.md)."""
    from auditor.counting.step import CountingError

    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    leaves, _ = torch.utils._pytree.tree_flatten(_plain(output))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    if not tensors:
        raise CountingError("the model's output holds no tensor that requires grad")
    return sum(t.float().sum() for t in tensors)


def _plain(value: Any) -> Any:
    """ModelOutputs (and other mappings) as dicts, recursively, so that pytree sees inside them."""
    mapping = hasattr(value, "keys") and hasattr(value, "values") and not isinstance(value, torch.Tensor)
    if isinstance(value, dict) or mapping:
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe(inputs: dict[str, Any]) -> str:
    parts = []
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k} {'x'.join(map(str, v.shape))}" if v.dim() else f"{k}")
        elif v is True:
            parts.append(k)
    return ", ".join(parts)
