"""What many test files share: the command line, invoked in-process, and a tiny GPT-2.

Plain functions (imported as ``from helpers import invoke, tiny_gpt2``), not conftest fixtures:
tests call them with arguments, inside parametrized helpers and at module level, where a fixture
cannot reach. conftest.py holds the fixtures proper (the private count cache, ``windows``)."""
from click.testing import CliRunner

from auditor.cli import main

GPT2_TINY = {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def invoke(*args, env=None):
    """`auditor ARGS...` in-process (arguments may be paths); click's Result, stdout and stderr apart."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def tiny_gpt2(*, seed: int | None = 0, dropout: bool = True, **config):
    """A GPT-2 LM of random weights (seeded unless ``seed`` is None) from GPT2_TINY with ``config``
    over it; ``dropout=False`` zeroes its three dropout rates (CPU runs that must repeat exactly)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if seed is not None:
        torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(**{**GPT2_TINY, **({} if dropout else NO_DROPOUT), **config}))
