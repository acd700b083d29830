"""The model's hooks: a call begins (its key, its cached cost or a window), returns (its forward
added), and is reached by a backward (its backward added once per backward).
"""
from __future__ import annotations

import functools
import weakref

import torch

from auditor.tracking.calls import (
    _POSITIONS,
    _UNCOUNTED_BACKWARD,
    _UNSEEN_CALLS,
    CallCost,
    _backward_work,
    _Call,
    _grad_outputs,
    _mark_dead,
    _next_sequence_nr,
    _queue_callback,
    _signature,
    _work,
)
from auditor.tracking.compiled import _add_records, _compiled_target


class CallHooks:
    """The forward pre-hook, forward hook and gradient hooks of a watched model. A part of ComputeAudit
    (auditor/tracking/audit.py), whose state it shares."""

    def _call_key(self, module, args, kwargs, grad: bool) -> tuple:
        """What a call's cost is cached under: the module, its position among the calls since the
        last backward (a training call; evaluation calls have none), and its inputs' signature."""
        sig = _signature(module, args, kwargs)
        if not grad:
            return (id(module), None, sig)
        if self._backward_seen:  # a backward ran since the last call: a new group of calls
            self._position, self._backward_seen = 0, False
        key = (id(module), self._position if self._position < _POSITIONS else _POSITIONS, sig)
        self._position += 1
        if self._window is not None:
            self._end_tail()
            if self._window_done():
                self._close_window()
        return key

    def _known_cost(self, key: tuple, grad: bool) -> "CallCost | None":
        """The call's cost if counted before, or predicted (a decoding step, from the counted
        lengths' line); None where it must be counted."""
        cached = self.cache.get(key)
        if cached is None and not grad and key not in self._unstable:
            predicted = self._decode.predict(key)
            if predicted is not None:
                cached = self.cache[key] = CallCost(predicted, 0, 0, 0, 0)
        return cached

    def _before_forward(self, module, args, kwargs):
        if self._stack or self._side_counting or torch._C._current_graph_task_id() != -1:
            self._stack.append(None)  # inside a call, rerun by a backward, or the meta count of one
            return
        if self._joining and self._join_config.is_first_joinable:
            raise RuntimeError("ComputeAudit in Join: put the audit after the model, Join([model, audit]); Join "
                               "counts iterations by its first joinable's collectives, and the audit runs none")
        grad = torch.is_grad_enabled()
        key = self._call_key(module, args, kwargs, grad)
        phase = self._phase or ("train" if grad else "eval")
        if grad and phase == "train":
            self.facts.saw_inputs(args, kwargs)  # tokens seen, for the dossier
        cached = self._known_cost(key, grad)
        target = _compiled_target(module) or self._inner_compiled.get(module)
        side = None
        if target is not None:
            # Compiled code must run with no dispatch mode over it (Dynamo would skip the frame
            # for good): a new key is counted on meta copies first, and the counter, if a window
            # holds it on, steps aside for the call.
            self._compiled_call = True
            self._sync_mode()
            if cached is None or self._window is not None:  # counted live (a window): its own work from meta
                side = self._count_compiled(target, key, args, kwargs, grad)
                if side is None and cached is None:
                    cached = self.cache[key]
        if self._limits and phase in self._guarded:
            self._guard(cached, phase)
        live = self._window is not None or cached is None
        if live and self._window is None:
            self._window = []
        call = _Call(key, grad, live, self.steps, phase, side if live else None)
        if live:
            self._window.append(call)
            if grad:
                self._window_grad.append(call)
                self._window_los.append(call.lo)
            self._sync_mode()
        self._stack.append(call)

    def _after_forward(self, module, args, output):
        call = self._stack.pop() if self._stack else None
        if call is None:
            return
        if self._compiled_call:
            self._compiled_call = False
            self._sync_mode()
        if call.live:
            call.hi = _next_sequence_nr()
            if call.side is not None:  # compiled: its forward as counted on meta
                _add_records(call.own, call.side, ("forward",))
            self._settle(call)
            call.forward, call.forward_recompute, call.forward_extra = _work(call.own)
        elif call.grad:
            cost = self.cache[call.key]
            self._add(call.phase, cost.forward + cost.tail, cost.forward_recompute, cost.extra)
        else:
            self._add(call.phase, self.cache[call.key].forward)
        if not call.grad:
            if call.live and self._window == [call]:
                self._close_window()  # an evaluation call counted alone: nothing more to wait for
            return
        self._tail = call
        tensors = _grad_outputs(output)
        if not tensors:
            return

        def reached(_grad, call=call):
            self._reached(call)
        for t in tensors:
            t.register_hook(reached)
        if call.live:
            call.outputs = True
            # The hook lives as long as the call's graph: when it is freed, no backward can reach it.
            call.ref = weakref.ref(reached, functools.partial(_mark_dead, weakref.ref(call)))

    def _reached(self, call: _Call) -> None:
        """A backward got to one of the call's outputs: once per call and backward, its cached cost
        is added. While a window is open (or steps are backwards) the autograd engine calls
        _backward_done when this backward ends."""
        gid = torch._C._current_graph_task_id()
        if gid != self._backward_gid:
            self._backward_gid = gid
            self._backward_seen = True  # the next call starts a new group: position 0
            if self._window is not None or self._stepper is None:
                self._backward_calls = []
                _queue_callback(self._backward_done)
        if call.gid == gid:
            return
        call.gid = gid
        if call.live:
            if call.side is not None:  # compiled: its backward as counted on meta, once a backward
                _add_records(call.own, call.side, ("backward", "recompute"))
            self._backward_calls.append(call)  # measured by the window
            return
        cost = self.cache.get(call.key)
        if cost is None or cost.backward is None:
            self._uncounted_backward(call)
            return
        self._add(call.phase, cost.backward, cost.recompute, cost.backward_extra)

    def _backward_done(self) -> None:
        """The end of a backward that reached a call (an autograd engine callback): what it did
        to each call counted live, one figure per backward; without an optimizer, a step."""
        calls, self._backward_calls = self._backward_calls, []
        self._backward_gid = None
        for call in self._window_grad:  # counted live: what the backward did, as it was measured
            if call.hi is None:
                continue  # still running: a backward inside it is part of its own work
            work = _backward_work(call)
            self._settle(call)
            if call in calls:
                call.per_reach.append(tuple(a - b for a, b in zip(work, call.reach_base)))
            elif work != call.reach_base:
                call.irregular = True
            call.reach_base = work
        if self._stepper is None:
            self._end_step()

    def _gradient_arrives(self, param: torch.Tensor) -> None:
        """A watched model's parameter got its gradient: some backward that reached a call of it
        must be running, or the model was called where its hooks cannot see (a compiled graph of
        the original module, which bypasses the hooks on it): loud, and the figure incomplete.
        A backward inside a watched call (Lightning's manual optimization runs it inside the step
        the callback watches) is that call's own work, counted with its forward."""
        if self._side_counting or self._stack or torch._C._current_graph_task_id() == self._backward_gid:
            return
        self.uncovered.add(_UNSEEN_CALLS)
        self._warn_once("unseen", "auditor: the watched model's parameters got gradients from calls its hooks did "
                        "not see, so their FLOPs are missing (the figure is marked incomplete). A model compiled "
                        "with torch.compile must be watched as the compiled module (ComputeAudit(model=compiled)), "
                        "not as the original one, whose hooks the compiled graph bypasses")

    def _uncounted_backward(self, call: _Call) -> None:
        """A backward reached a call whose key was counted without one: it cannot be counted now
        (a counter cannot start inside a backward), so the count is marked incomplete and the key
        is counted again the next time it comes."""
        self.uncovered.add(_UNCOUNTED_BACKWARD)
        self.cache.pop(call.key, None)
        self._warn_once("uncounted", "auditor: a backward reached a call of the model whose inputs were first seen "
                        "without a backward; that backward was not counted (the figure is marked incomplete)")

    def _end_tail(self) -> None:
        """The last call's tail (the loss after it) ends here: charge what was counted of it."""
        if self._tail is not None and self._tail.live:
            self._settle(self._tail)
