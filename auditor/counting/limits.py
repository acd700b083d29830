"""Bounds on what counting a model may cost, whatever its config says (torch-free to import).

A config is data, and data can ask for anything: ``num_hidden_layers: 2000000`` builds for hours
on the meta device, where no memory limit stops it. Building is cut off once the model has more
modules and parameter tensors than ``max_modules``, with a message that names the cap and how to
raise it. The largest real models have tens of thousands (DeepSeek-V3: 61 layers of 256
experts, about 50,000 modules and 50,000 tensors).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

MAX_CONFIG_BYTES = 10_000_000   # a config.json; the largest real ones are tens of kilobytes
DEFAULT_MAX_MODULES = 500_000   # modules + parameter tensors of one model


# Config fields that count layers, in transformers' configs; each layer registers at least a
# module and a parameter tensor of its own, and real ones a dozen or more.
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers",
                "num_encoder_layers", "num_decoder_layers")
PER_LAYER_AT_LEAST = 4


class ModelTooLarge(Exception):
    """Building the model went past the cap; str() says so in one line."""


def _message(cap: int, what: str) -> str:
    return (f"{what} modules and parameter tensors, over the cap of {cap:,} on what is counted (far beyond any real "
            f"model's); raise it with --max-modules if the model is meant")


def check_layer_counts(config: dict, max_modules: int | None) -> None:
    """Refuse at once, before building, a config whose layer counts alone pass the cap: building
    2,000,000 layers to find that out would take hours. ``config``: the config's dict (nested
    sub-configs included, as PretrainedConfig.to_dict() gives them)."""
    cap = DEFAULT_MAX_MODULES if max_modules is None else max_modules
    found: list[tuple[str, int]] = []

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in LAYER_FIELDS and isinstance(item, int) and not isinstance(item, bool):
                    found.append((f"{path}{key}", item))
                elif isinstance(item, dict):
                    walk(item, f"{path}{key}.")
    walk(config, "")
    if sum(n for _, n in found) * PER_LAYER_AT_LEAST > cap:
        named = ", ".join(f"{k}: {n:,}" for k, n in found)
        total = sum(n for _, n in found) * PER_LAYER_AT_LEAST
        raise ModelTooLarge(_message(cap, f"the config asks for {named} layers: at least {total:,}"))


@contextlib.contextmanager
def module_budget(max_modules: int | None) -> Iterator[None]:
    """Count the submodules and parameters registered while the block runs (torch's global
    registration hooks see every ``add_module`` and ``register_parameter``, in any model code),
    and raise ModelTooLarge past ``max_modules``. None: DEFAULT_MAX_MODULES."""
    from torch.nn.modules.module import (
        register_module_module_registration_hook,
        register_module_parameter_registration_hook,
    )

    cap = DEFAULT_MAX_MODULES if max_modules is None else max_modules
    seen = [0]

    def tick(*_args):
        seen[0] += 1
        if seen[0] > cap:
            raise ModelTooLarge(_message(cap, "the model being built has more"))

    handles = [register_module_module_registration_hook(tick), register_module_parameter_registration_hook(tick)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
