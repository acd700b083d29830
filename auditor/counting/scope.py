"""Where the counter is: which module runs (a stack in the forward, autograd-node tags in the
backward) and which phase (forward, backward, or recompute inside the backward). The dispatch
mode (mode.py) asks these two for every op it charges."""
from __future__ import annotations

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._pytree import tree_flatten

_TAG = "auditor_module"


class ModuleScope:
    """Which module is running: a stack in the forward, autograd-node tags in the backward.

    When a module's forward returns, every autograd node it created and no inner module
    claimed is tagged with its path (``node.metadata``); in the backward the engine's current
    node names the module exactly. torch's ModuleTracker instead keeps a set of modules whose
    backward is in flight, which holds q, k and v projections at once, since they share an
    input, and charges their gradients to whichever the set yields first.
    """

    def __init__(self, names: dict[torch.nn.Module, str]):
        self.names = names
        self.stack: list[str] = []
        self._tasks: list[int] = []      # the autograd graph task each stack entry was entered in
        self._inputs: list[set] = []
        self._handles: list = []

    def __enter__(self):
        self.stack.clear()
        self._tasks.clear()
        self._handles = [register_module_forward_pre_hook(self._enter_module),
                         # always_call: a rerun that checkpointing stops early raises out of
                         # its modules, which must still leave the stack.
                         register_module_forward_hook(self._leave_module, always_call=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()

    def current(self) -> str:
        if self.stack and (torch._C._current_graph_task_id() == -1 or self.entered_in_this_backward()):
            # The forward; or a forward rerun inside the backward (activation checkpointing),
            # which enters its modules again: the engine's node is the one that asked for it.
            return self.stack[-1]
        node = torch._C._current_autograd_node()
        if node is not None:
            tag = node.metadata.get(_TAG)
            if tag is not None:
                return tag
        return self.stack[-1] if self.stack else ""

    def entered_in_this_backward(self) -> bool:
        """The innermost running module was entered inside the backward now running: forward
        work rerun there (not a module whose own forward called autograd.grad)."""
        return bool(self._tasks) and self._tasks[-1] == torch._C._current_graph_task_id() != -1

    def _enter_module(self, mod, args):
        self.stack.append(self.names.get(mod, type(mod).__name__))
        self._tasks.append(torch._C._current_graph_task_id())
        leaves, _ = tree_flatten(args)
        self._inputs.append({t.grad_fn for t in leaves if isinstance(t, torch.Tensor) and t.grad_fn is not None})

    def _leave_module(self, mod, args, output):
        name = self.stack.pop() if self.stack else ""
        if self._tasks:
            self._tasks.pop()
        stop = self._inputs.pop() if self._inputs else set()
        leaves, _ = tree_flatten(output)
        todo = [t.grad_fn for t in leaves if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        seen = set()
        while todo:
            node = todo.pop()
            if node is None or node in stop or node in seen:
                continue
            seen.add(node)
            node.metadata.setdefault(_TAG, name)
            todo.extend(next_node for next_node, _ in node.next_functions)


def module_paths(model: torch.nn.Module) -> dict[torch.nn.Module, str]:
    """Each module's path; a module reachable by two paths keeps its first, as named_modules()."""
    paths: dict[torch.nn.Module, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(mod, name)
    return paths


def phase_now(scope: ModuleScope) -> str:
    """forward, backward, or recompute: forward work rerun inside the backward.

    The engine runs backward ops with grad mode off, unless the backward builds a graph of its
    own (create_graph=True: gradient penalties, meta-learning, physics-informed losses), which
    is training compute like any backward. Activation checkpointing reruns forward work under
    grad mode inside the backward: hardware work, reported apart. Reruns are recognised three
    ways: torch's reentrant checkpoint (and Megatron's and DeepSpeed's, same name) runs them
    inside a CheckpointFunctionBackward node; torch's non-reentrant checkpoint under its
    recomputation saved-tensor hooks; any other implementation by entering modules again
    inside the backward.
    """
    if torch._C._current_graph_task_id() == -1:
        return "forward"
    if not torch.is_grad_enabled():
        return "backward"
    node = torch._C._current_autograd_node()
    if node is not None and node.name() == "CheckpointFunctionBackward":
        return "recompute"
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(True)
    if hooks and getattr(hooks[0], "__qualname__", "").startswith("_recomputation_hook."):
        return "recompute"
    return "recompute" if scope.entered_in_this_backward() else "backward"
