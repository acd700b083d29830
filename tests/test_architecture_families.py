"""One model of each family beyond causal LMs, counted against a closed form derived by hand.

The architecture sweep (benchmarks/architectures.py, docs/architectures.md) counts every model
type transformers can build and checks each count against itself: with the repeated-block
shortcut and without, on meta and on the CPU. These tests check one representative of each
family against the arithmetic instead, from the config:

- a linear layer over t positions is 2 t in out; a convolution 2 x output positions x out
  channels x (in channels / groups) x kernel taps; a multiply-add is 2 FLOPs, bias adds free;
- attention over s positions with heads x head size = d is 2 s^2 d for QK^T and again for AV,
  in full (causal masking is an assumption, not a discount);
- the backward of a matmul is twice its forward where its input needs a gradient (input and
  weight gradients), once where it reads data (the weight gradient alone: a patch embedding or
  a stem convolution over pixels), and nothing where nothing downstream of it reaches the loss;
- norms, activations, pooling, softmax, embeddings and the losses are elementwise: not counted.

Each model is counted on meta with and without the shortcut and on the CPU with random
weights; all three must agree with the closed form exactly.
"""
from __future__ import annotations

import torch
from transformers import (CLIPConfig, CLIPModel, LlavaConfig, LlavaForConditionalGeneration, ResNetConfig,
                          ResNetForImageClassification, ViTConfig, ViTForImageClassification, Wav2Vec2Config,
                          Wav2Vec2ForCTC)

from auditor.counting import count_step


def counts(cls, config, make_inputs, *, cpu_inputs=None):
    """The step counted three ways (meta shortcut, meta full, CPU full); they must agree."""
    results = []
    for device, repeated in (("meta", True), ("meta", False), ("cpu", False)):
        torch.manual_seed(0)
        with torch.device(device):
            model = cls(config)
        model.train()
        make = cpu_inputs if device == "cpu" and cpu_inputs is not None else make_inputs
        results.append(count_step(model, make(torch.device(device)), repeated_blocks=repeated))
    fast, full, cpu = results
    assert not fast.uncovered and not full.uncovered and not cpu.uncovered
    assert fast.records == full.records
    assert (cpu.forward, cpu.backward) == (full.forward, full.backward)
    return full


def encoder_layer(t: int, d: int, ffn: int) -> int:
    """Forward FLOPs of one transformer encoder layer over t positions: q, k, v, o projections,
    QK^T and AV, and a two-matrix feed-forward."""
    return 2 * t * 4 * d * d + 2 * 2 * t * t * d + 2 * t * 2 * d * ffn


def test_vit_image_classification():
    image, patch, c, d, layers, ffn, labels = 32, 8, 3, 64, 3, 128, 10
    config = ViTConfig(image_size=image, patch_size=patch, num_channels=c, hidden_size=d, num_hidden_layers=layers,
                       num_attention_heads=4, intermediate_size=ffn, num_labels=labels)
    r = counts(ViTForImageClassification, config, lambda dev: {
        "pixel_values": torch.zeros(1, c, image, image, device=dev) if dev.type == "meta" else
        torch.randn(1, c, image, image), "labels": torch.zeros(1, dtype=torch.long, device=dev)})
    patches = (image // patch) ** 2
    t = patches + 1                                     # the CLS token
    embed = 2 * patches * d * c * patch * patch         # patch embedding: a patch x patch convolution, stride patch
    head = 2 * d * labels                               # the classifier reads the CLS token alone
    assert r.forward == embed + layers * encoder_layer(t, d, ffn) + head
    # The patch embedding reads pixels, which need no gradient: its weight gradient alone.
    assert r.backward == embed + 2 * (layers * encoder_layer(t, d, ffn) + head)


def test_resnet_basic_blocks():
    image, c, stem, widths, labels = 32, 3, 8, (8, 16), 10
    config = ResNetConfig(num_channels=c, embedding_size=stem, hidden_sizes=list(widths), depths=[1, 1],
                          layer_type="basic", num_labels=labels, downsample_in_first_stage=False)
    r = counts(ResNetForImageClassification, config, lambda dev: {
        "pixel_values": torch.zeros(1, c, image, image, device=dev) if dev.type == "meta" else
        torch.randn(1, c, image, image), "labels": torch.zeros(1, dtype=torch.long, device=dev)})

    def conv(side: int, cin: int, cout: int, k: int) -> int:  # output side x side positions
        return 2 * side * side * cout * cin * k * k

    s1 = image // 2            # the 7x7 stride-2 stem: 16 x 16; its 3x3 stride-2 max pool: 8 x 8
    s2, s3 = s1 // 2, s1 // 4  # stage 0 keeps 8 x 8 (stride 1); stage 1 halves it to 4 x 4
    stem_conv = conv(s1, c, stem, 7)
    stage0 = 2 * conv(s2, stem, widths[0], 3)                     # two 3x3 convolutions, identity shortcut
    stage1 = (conv(s3, widths[0], widths[1], 3) + conv(s3, widths[1], widths[1], 3)
              + conv(s3, widths[0], widths[1], 1))                # and a 1x1 stride-2 projection shortcut
    head = 2 * widths[1] * labels                                 # after global average pooling
    assert r.forward == stem_conv + stage0 + stage1 + head
    assert r.backward == stem_conv + 2 * (stage0 + stage1 + head)  # the stem reads pixels


def test_wav2vec2_ctc_speech_encoder():
    samples, d, layers, heads, ffn, vocab = 400, 16, 2, 2, 32, 12
    conv_dim, conv_kernel, conv_stride = (8, 8), (10, 3), (5, 2)
    pos_kernel, pos_groups = 16, 4
    config = Wav2Vec2Config(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                            conv_dim=conv_dim, conv_kernel=conv_kernel, conv_stride=conv_stride,
                            num_conv_pos_embeddings=pos_kernel, num_conv_pos_embedding_groups=pos_groups,
                            vocab_size=vocab, apply_spec_augment=False, feat_extract_norm="group",
                            ctc_loss_reduction="mean", pad_token_id=0)

    def inputs(dev):
        return {"input_values": torch.zeros(1, samples, device=dev)}

    def with_labels(dev):      # on the CPU the CTC loss too (on meta its masked_select needs data)
        return {"input_values": torch.randn(1, samples), "labels": torch.tensor([[1, 2, 3, 4]])}

    r = counts(Wav2Vec2ForCTC, config, inputs, cpu_inputs=with_labels)
    t0 = (samples - conv_kernel[0]) // conv_stride[0] + 1          # 79 frames after the first convolution
    t = (t0 - conv_kernel[1]) // conv_stride[1] + 1                # 39 after the second
    features = 2 * t0 * conv_dim[0] * 1 * conv_kernel[0] + 2 * t * conv_dim[1] * conv_dim[0] * conv_kernel[1]
    projection = 2 * t * conv_dim[-1] * d
    # Grouped positional convolution, padding kernel // 2 each side: t + 1 outputs for an even
    # kernel (the extra one is then cut), each reading d / groups channels over the kernel.
    positional = 2 * (t + 1) * d * (d // pos_groups) * pos_kernel
    head = 2 * t * d * vocab
    assert r.forward == features + projection + positional + layers * encoder_layer(t, d, ffn) + head
    # The feature encoder sets requires_grad on the waveform in training (for gradient
    # checkpointing), so even the first convolution computes its input gradient: 2x throughout.
    assert r.backward == 2 * r.forward


def test_clip_contrastive_dual_encoder():
    image, patch, dv, dt, proj, layers, ffn, vocab, text = 32, 8, 64, 48, 32, 2, 96, 100, 16
    config = CLIPConfig(
        vision_config=dict(image_size=image, patch_size=patch, hidden_size=dv, num_hidden_layers=layers,
                           num_attention_heads=4, intermediate_size=ffn),
        text_config=dict(vocab_size=vocab, hidden_size=dt, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=ffn, max_position_embeddings=text, eos_token_id=2, pad_token_id=1,
                         bos_token_id=0),
        projection_dim=proj)

    def inputs(dev):
        ids = (torch.zeros(1, text, dtype=torch.long, device=dev) if dev.type == "meta"
               else torch.randint(3, vocab, (1, text)))
        pixels = torch.zeros(1, 3, image, image, device=dev) if dev.type == "meta" else torch.randn(1, 3, image, image)
        return {"input_ids": ids, "pixel_values": pixels, "return_loss": True}

    r = counts(CLIPModel, config, inputs)
    patches = (image // patch) ** 2
    embed = 2 * patches * dv * 3 * patch * patch
    vision = layers * encoder_layer(patches + 1, dv, ffn) + 2 * dv * proj  # projection of the CLS token
    texts = layers * encoder_layer(text, dt, ffn) + 2 * dt * proj          # projection of the EOS token
    logits = 2 * proj                                                      # one text x one image similarity
    assert r.forward == embed + vision + texts + logits
    assert r.backward == embed + 2 * (vision + texts + logits)


def test_llava_image_tokens_and_unused_last_vision_layer():
    image, patch, dv, dt, v_layers, t_layers, ffn, vocab, text = 32, 8, 64, 64, 3, 2, 128, 128, 16
    heads, kv, image_token = 4, 2, 100
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=image, patch_size=patch, hidden_size=dv,
                           num_hidden_layers=v_layers, num_attention_heads=4, intermediate_size=ffn),
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=dt, num_hidden_layers=t_layers,
                         num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=ffn,
                         max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        image_token_index=image_token, vision_feature_layer=-2, vision_feature_select_strategy="default")
    patches = (image // patch) ** 2         # 16 image tokens: the CLS position is dropped ("default")
    s = patches + text

    def inputs(dev):
        words = torch.zeros(1, text, dtype=torch.long) if dev.type == "meta" else torch.randint(3, 99, (1, text))
        ids = torch.cat([torch.full((1, patches), image_token), words], dim=1).to(dev)
        pixels = torch.zeros(1, 3, image, image, device=dev) if dev.type == "meta" else torch.randn(1, 3, image, image)
        return {"input_ids": ids, "pixel_values": pixels, "labels": ids}

    # On the CPU the model checks that the image tokens match the features it made: 16 exactly.
    r = counts(LlavaForConditionalGeneration, config, inputs)
    hd = dt // heads
    embed = 2 * patches * dv * 3 * patch * patch
    vision_layer = encoder_layer(patches + 1, dv, ffn)
    projector = 2 * patches * dv * dt + 2 * patches * dt * dt        # linear, GELU, linear
    attention = 2 * s * dt * (heads + 2 * kv) * hd + 2 * s * heads * hd * dt + 2 * 2 * heads * s * s * hd
    lm = t_layers * (attention + 2 * s * 3 * dt * ffn) + 2 * s * dt * vocab   # SwiGLU MLP; the LM head
    assert r.forward == embed + v_layers * vision_layer + projector + lm
    # vision_feature_layer -2 reads the second-to-last layer's output: the last vision layer runs
    # forward but nothing it computes reaches the loss, so it has no backward at all.
    last = f"model.vision_tower.encoder.layers.{v_layers - 1}"
    assert r.by_module(depth=5)[last] == {"forward": vision_layer, "backward": 0, "recompute": 0}
    assert r.backward == embed + 2 * ((v_layers - 1) * vision_layer + projector + lm)


def test_the_sweep_inserts_as_many_image_tokens_as_llava_makes():
    """benchmarks/architectures.py finds each multimodal model's placeholder count by running it
    once; for LLaVA that must be (image / patch)^2, and on the CPU the model's own check agrees."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import architectures as sweep
    import architecture_inputs

    image, patch, image_token = 32, 8, 100
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=image, patch_size=patch, hidden_size=64,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        text_config=dict(model_type="llama", vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        image_token_index=image_token)
    for device in ("meta", "cpu"):
        model = sweep.build(LlavaForConditionalGeneration, config, device)
        inputs, placeholders, _ = sweep.prepare(model, "tokens", device)
        assert placeholders == {"image_features": (image // patch) ** 2}
        ids = inputs["input_ids"]
        assert ids.shape == (1, (image // patch) ** 2 + architecture_inputs.SEQ)
        if device == "cpu":
            assert int((ids == image_token).sum()) == (image // patch) ** 2
