"""Windows: the calls counted live at dispatch level, closed when every backward that can reach them
has; what they measured becomes the cached cost of their keys.
"""
from __future__ import annotations


from auditor.counting.result import StepCount
from auditor.record.step_breakdown import training_breakdown
from auditor.tracking.calls import _OFF_THE_LINE, CallCost, _Call, _forward_extra, _work


class Windows:
    """Opens, settles and closes counting windows, and learns call costs from them. A part of ComputeAudit
    (auditor/tracking/audit.py), whose state it shares."""

    def _window_done(self) -> bool:
        """Every call counted live has had its backward, cannot have one (no output needs a
        gradient, or its graph is gone), or a step ended since it ran."""
        return all(c.per_reach or not c.outputs or c.dead or c.step < self.steps for c in self._window_grad)

    def _close_window(self) -> None:
        if self._window is None:
            return
        window, self._window = self._window, None
        step = StepCount()
        for call in window:
            self._settle(call)
            call.live = False
            self._learn(call)
            step.records.update(call.own.records)
            step.records.update(call.tail.records)
            step.uncovered.update(call.own.uncovered)
            step.uncovered.update(call.tail.uncovered)
        self._window_grad, self._window_los = [], []
        # of the latest training step (an evaluation window has no backward): record/step_breakdown.py
        self._breakdown = training_breakdown(window) or self._breakdown
        if step.uncovered:
            self.uncovered.update(step.uncovered)
            self._warn_once("uncovered", "operators without a FLOP formula met: " + ", ".join(sorted(step.uncovered)))
        self._sync_mode()

    def _learn(self, call: _Call) -> None:
        """Cache what the window measured of the call, when it is one number per backward."""
        reaches = call.per_reach
        if call.irregular or any(r != reaches[0] for r in reaches):
            return  # not one figure per backward: the key is counted again next time
        if reaches:
            backward, recompute, backward_extra = reaches[0]
        else:  # never reached: nothing to differentiate, or no backward came (None: unknown)
            backward, recompute, backward_extra = (None, 0, 0) if call.outputs else (0, 0, 0)
        extra = call.forward_extra + _forward_extra(call.tail)
        cost = CallCost(call.forward, call.forward_recompute, call.tail.forward, backward, recompute, extra,
                        backward_extra)
        if call.key in self._unstable:
            return
        if not call.grad:
            off = self._decode.learn(call.key, call.own.records, call.own.uncovered)
            if off is not None:
                why, predicted = off
                for key in predicted:
                    self.cache.pop(key, None)
                self.uncovered.add(_OFF_THE_LINE)
                self._warn_once("off-the-line", f"auditor: {why}: the {len(predicted)} calls predicted from that line "
                                "may be off (the figure is marked incomplete); such calls are counted from now on")
        cached = self.cache.get(call.key)
        if cached is None:
            self.counted_signatures += 1
            self.cache[call.key] = cost
        elif cached.backward is None:
            self.cache[call.key] = cost
        elif cost.backward is not None and cost != cached:
            # Not what the first call with this key did: no figure can stand for both.
            self._unstable.add(call.key)
            del self.cache[call.key]
            self._warn_once("unstable", "auditor: calls of the model with the same inputs did different work "
                            f"({cached.forward + cached.tail + cached.backward:,} then "
                            f"{cost.forward + cost.tail + cost.backward:,} FLOPs); such calls are counted at "
                            "dispatch level every time")

    def _settle(self, call: _Call) -> None:
        """Charge what was counted of a live call since it was last charged."""
        if self._mode is not None and self._mode.tp is not None:
            self._mode.resolve_pending()
        now = (*_work(call.own), *_work(call.tail))
        done = call.settled
        self._add(call.phase, now[0] - done[0] + now[3] - done[3], now[1] - done[1] + now[4] - done[4],
                  now[2] - done[2] + now[5] - done[5])
        call.settled = list(now)

    def _add(self, phase: str, work: int, recompute: int = 0, extra: int = 0) -> None:
        """Work of a call (its forward, backward or tail) to its phase's figure."""
        if phase == "train":
            if work:
                self.train_flops += work
                self._interval_flops += work
                self._last_step_flops += work
            if extra:
                self._hardware_extra += extra
                self._interval_extra += extra
        elif phase == "eval":
            self.eval_flops += work
        elif work:
            self._phase_flops[phase] = self._phase_flops.get(phase, 0) + work
            self._interval_phases[phase] = self._interval_phases.get(phase, 0) + work
        self.recompute_flops += recompute
