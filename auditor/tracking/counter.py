"""The dispatch-level counter of a window: on while a window is open or an optimizer step is
measured, off otherwise, each op's FLOPs routed to the call (or tail, or optimizer) it belongs to.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from auditor.counting.mode import CountingMode
from auditor.counting.result import StepCount


class _RoutedCounting(CountingMode):
    """The dispatch-level counter, each op's FLOPs recorded into the count ``route()`` names."""

    def __init__(self, route: Callable[[], StepCount], names: dict, dense: dict, provenance=None,
                 in_step: Callable[[StepCount], bool] | None = None):
        super().__init__(None, dense, names=names, provenance=provenance)
        self._route = route
        self._in_step = in_step

    def _record(self, op, flops, part=None):
        self.result = self._route()
        return super()._record(op, flops, part)  # the record's key (the sparse-product check keeps it)

    def _model_work(self) -> bool:
        return self._in_step is None or not self._in_step(self._route())

    def _note_uncovered(self, name: str) -> None:
        self.result = self._route()
        super()._note_uncovered(name)

    def _note_unmodelled(self, name: str, layout) -> None:
        self.result = self._route()
        super()._note_unmodelled(name, layout)


class Counter:
    """Switches the routed counter on and off and says where each op it records belongs. A part of
    ComputeAudit (auditor/tracking/audit.py), whose state it shares."""

    def _route(self) -> StepCount:
        """Where the op the counter is recording now belongs."""
        if self._side_counting:  # a compiled call counted on meta: not the window's
            return self._dropped
        if torch._C._current_graph_task_id() != -1:  # a backward: the node says whose forward made it
            node = torch._C._current_autograd_node()
            if node is not None and self._window_los:
                seq = node._sequence_nr()
                i = bisect.bisect_right(self._window_los, seq) - 1
                if i >= 0:
                    call = self._window_grad[i]
                    if call.hi is None or seq < call.hi:  # a compiled call's own: counted on meta
                        return call.own if call.side is None else self._dropped
                    return call.tail
        elif self._stack:
            call = self._stack[0]
            return call.own if call.live and call.side is None else self._dropped
        if self._in_step and not self._in_closure:
            return self._optimizer_count
        if torch._C._current_graph_task_id() == -1 and torch.is_grad_enabled() and self._tail is not None \
                and self._tail.live:
            return self._tail.tail
        return self._dropped  # before the window's calls (a call added from the cache), or after a step

    def _sync_mode(self, *, leaving: bool = False) -> None:
        """Switch the dispatch-level counter on while a window is open or an optimizer step is
        measured, off otherwise. Only called outside any backward (the engine restores a graph
        task's dispatch modes for each node, so one entered or left inside would not hold)."""
        wanted = not leaving and not self._compiled_call and (
            self._window is not None or (self._measure_step and self._in_step and not self._in_closure))
        if wanted and self._mode is None:
            self._mode = _RoutedCounting(self._route, self._names, self._dense, self._provenance or False,
                                         lambda result: result is self._optimizer_count)
            self._mode.__enter__()
        elif not wanted and self._mode is not None:
            from torch.utils._python_dispatch import _get_current_dispatch_mode
            if _get_current_dispatch_mode() is not self._mode._dispatch:
                # A dispatch mode entered since sits on top: leaving ours would pop that one.
                # It stays (recording nothing) until the next point it can leave.
                if leaving:
                    self._warn_once("mode", "auditor: a dispatch mode entered during the audit is still active; "
                                    "the audit's counter stays below it")
                return
            mode, self._mode = self._mode, None
            self._provenance = mode.tp or self._provenance  # made at the first op on DTensors: kept for the run
            mode.__exit__(None, None, None)
