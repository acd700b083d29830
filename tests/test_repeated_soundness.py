"""The repeated-block shortcut is used only where the count is proven linear in the blocks.

Each model below once fooled it (the shortcut multiplied one block's cost where the parent's
work does not grow linearly, or blocks see other shapes than the first two): now each is
counted in full, equal to its closed form, and says why. Where the shortcut is valid it is
still used, equal to the full count."""
import torch
from torch import nn

from auditor.counting import count_step

B, S, D = 4, 32, 16


class Pairwise(nn.Module):
    """Every block's output against every other's: the parent's work grows with n^2."""

    def __init__(self, n=6, d=D):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(n))

    def forward(self, x):
        outs = torch.stack([b(x) for b in self.blocks], 1)       # (B, n, d)
        return outs @ outs.transpose(1, 2)                        # (B, n, n)


class Halving(nn.Module):
    """The sequence halves after every ``every`` blocks."""

    def __init__(self, n, every, d=D):
        super().__init__()
        self.every = every
        self.blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(n))

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i % self.every == self.every - 1:
                x = x[:, ::2]
        return x


class DLRM(nn.Module):
    """DLRM's shape: embedding tables, a pairwise dot-product interaction, read back through
    index tensors made for the full number of tables (on meta, indexing past the end of a
    shortened interaction raises nothing)."""

    def __init__(self, tables=8, rows=1000, d=D):
        super().__init__()
        self.emb = nn.ModuleList(nn.EmbeddingBag(rows, d, mode="sum") for _ in range(tables))
        self.bottom = nn.Linear(13, d)
        li, lj = torch.tril_indices(tables + 1, tables + 1, offset=-1)
        self.register_buffer("li", li, persistent=False)
        self.register_buffer("lj", lj, persistent=False)
        self.top = nn.Linear(d + len(li), 1)

    def forward(self, dense, sparse):
        x = self.bottom(dense)
        feats = torch.stack([x] + [e(sparse[:, k:k + 1]) for k, e in enumerate(self.emb)], 1)
        z = feats @ feats.transpose(1, 2)
        return self.top(torch.cat([x, z[:, self.li, self.lj]], 1))


def both_devices(make, inputs):
    """(CPU count, meta count) with the shortcut on, each asserted equal to the full count."""
    counts = []
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        with torch.device(device):
            model = make()
        args = tuple(t.to(device) for t in inputs)
        shortcut, full = count_step(model, args), count_step(model, args, repeated_blocks=False)
        assert shortcut.total == full.total and shortcut.by_module(9) == full.by_module(9), device
        assert any("repeated-block shortcut not used" in a for a in shortcut.assumptions), shortcut.assumptions
        counts.append(shortcut)
    return counts


def test_pairwise_combination_is_counted_in_full():
    # forward: n Linear 2BD^2 + the (B, n, n) product 2Bn^2D; backward: n weight gradients 2BD^2
    # (the input needs none) + both operands' gradients of the product, 2 x 2Bn^2D
    n = 6
    closed = 2 * n * 2 * B * D * D + 3 * 2 * B * n * n * D
    for count in both_devices(lambda: Pairwise(n), (torch.randn(B, D),)):
        assert count.total == closed == 38_400
        assert "not linear in the number of blocks.0 blocks" in " ".join(count.assumptions)


def halving_closed_form(n: int, every: int) -> int:
    # Linear on (B, s_i, D): forward 2 B s_i D^2, weight gradient the same, input gradient the
    # same for every block but the first (the input needs no gradient).
    lengths = [S // 2 ** (i // every) for i in range(n)]
    return 2 * B * D * D * (2 * sum(lengths) + sum(lengths[1:]))


def test_a_parent_that_halves_the_sequence_every_two_blocks():
    for count in both_devices(lambda: Halving(6, 2), (torch.randn(B, S, D),)):
        assert count.total == halving_closed_form(6, 2) == 622_592


def test_a_parent_that_halves_the_sequence_every_three_blocks():
    """Blocks 0, 1, 2 agree and lie on a line: only the whole model's probe sees block 3's input."""
    for count in both_devices(lambda: Halving(9, 3), (torch.randn(B, S, D),)):
        assert count.total == halving_closed_form(9, 3) == 966_656
        assert "blocks.0 and blocks.3 see different input shapes" in " ".join(count.assumptions)


def test_dlrm_interaction_on_meta_and_cpu():
    # bottom 2*B*13*D; the (B, 9, 9) interaction 2*B*9*9*D; top 2*B*(D + 36); lookups are free.
    # backward: top weight and input gradients; both operands of the interaction; bottom weight.
    fwd = 2 * B * 13 * D + 2 * B * 9 * 9 * D + 2 * B * (D + 36)
    bwd = 2 * (2 * B * (D + 36)) + 2 * (2 * B * 9 * 9 * D) + 2 * B * 13 * D
    inputs = (torch.randn(B, 13), torch.randint(0, 1000, (B, 8)))
    cpu, meta = both_devices(DLRM, inputs)
    assert cpu.total == meta.total == fwd + bwd == 35_680


def test_the_shortcut_is_still_used_where_it_is_proven():
    """A plain stack of identical blocks, each seeing the same shapes: counted by the shortcut,
    equal to the full count, and saying what was checked."""
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(D, 2 * D), nn.ReLU(), nn.Linear(2 * D, D))
                                        for _ in range(12))

        def forward(self, x):
            for b in self.blocks:
                x = x + b(x)
            return x

    with torch.device("meta"):
        model = Stack()
    x = torch.randn(B, S, D, device="meta")
    shortcut, full = count_step(model, x), count_step(model, x, repeated_blocks=False)
    assert shortcut.total == full.total
    # forward 2 x 2BSD(2D) a block; backward twice that (the first block's input needs no
    # gradient, but the residual carries it into the block's input gradient anyway from block 1 on)
    per_block = 2 * 2 * B * S * D * 2 * D
    assert shortcut.forward == 12 * per_block
    (said,) = [a for a in shortcut.assumptions if "repeated blocks counted once" in a]
    assert "blocks[0] x12" in said and "one, two and three of each kind on one line" in said


def test_routed_blocks_on_a_real_device_are_not_extrapolated():
    """Switch Transformers drop tokens past an expert's capacity: each block's routing differs,
    so on the CPU every block is counted as it ran, equal to the full count on the same data."""
    from transformers import (
        SwitchTransformersConfig,
        SwitchTransformersForConditionalGeneration,
    )

    config = SwitchTransformersConfig(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=4, num_decoder_layers=4,
                                      num_sparse_encoder_layers=2, num_sparse_decoder_layers=2, num_experts=4,
                                      vocab_size=100, expert_capacity=4, dropout_rate=0.0, router_jitter_noise=0.0)
    torch.manual_seed(0)
    model = SwitchTransformersForConditionalGeneration(config)
    ids = torch.randint(0, 100, (2, 16))
    inputs = {"input_ids": ids, "decoder_input_ids": ids, "labels": ids}
    shortcut, full = count_step(model, inputs), count_step(model, inputs, repeated_blocks=False)
    assert shortcut.total == full.total
    assert any("route their data (experts)" in a for a in shortcut.assumptions)


def test_llama4_layers_of_both_kinds_are_charged_k_of_e_experts():
    """Llama 4's default layout: every layer MoE (16 experts, top 1, computed densely and masked)
    and every fourth without RoPE, so two kinds of block. The shortcut ran the kinds with their
    lists shortened and charged the second kind all 16 experts (2.4x the routed compute)."""
    from transformers import Llama4TextConfig

    from auditor.counting.hf import count_hf

    config = Llama4TextConfig(hidden_size=64, intermediate_size=128, intermediate_size_mlp=128, num_hidden_layers=8,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100).to_dict()
    config["model_type"] = "llama4_text"
    shortcut = count_hf(config, seq_len=16)
    full = count_hf(config, seq_len=16, repeated_blocks=False)
    assert shortcut.total == full.total and shortcut.hardware_total == full.hardware_total
    assert any("layers[0] x6, model.layers[3] x2" in a for a in shortcut.assumptions)
    # the dense-masked experts: all 16 computed (hardware), 1/16 of that charged to the model
    experts = {k: v for k, v in full.by_module(5).items() if k.endswith("feed_forward.experts")}
    assert len(experts) == 8
