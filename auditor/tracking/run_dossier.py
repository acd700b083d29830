"""RUN_DIR/dossier.json at the end of a run: the sealed summary over the ledger's records.
"""
from __future__ import annotations

import json


class RunDossier:
    """Writes the run's dossier from its ledger. A part of ComputeAudit (auditor/tracking/audit.py), whose
    state it shares."""

    def _write_dossier(self) -> None:
        """RUN_DIR/dossier.json: the sealed summary, with the ledger's head and its cumulative series."""
        from auditor.record import dossier
        from auditor.record.ledger import Sums, read_ledger
        from auditor.record.series import of_records
        from auditor.rules.selection import load_rules
        from auditor.rules.verdicts import evaluate

        state = read_ledger(self.run_dir)
        estimate = self.estimate
        # The ledger is the record: a resumed run's evaluation, recomputation and phases before the
        # resume count too, as its total does (verify checks the dossier against these sums), and
        # the verdicts compare the phases each rule counts as the ledger holds them.
        sums = Sums()
        for record in state.records:
            sums.add(record)
        total = estimate.flops
        estimate.phases = sums.by_phase(total)
        verdicts = evaluate(estimate.figures(), self.rules or load_rules(None))
        tracked = {"total_flops": total, "low": total, "high": total, "estimates": [estimate.to_dict()],
                   "verdicts": [v.to_dict() for v in verdicts], "uncovered_ops": estimate.uncovered_ops,
                   "as_of": verdicts[0].as_of if verdicts else None, "eval_flops": sums.eval,
                   "recompute_flops": sums.recompute, "steps": self.steps,
                   "flops_by_phase": estimate.phases, "hardware_flops": sums.hardware,
                   "series": of_records(state.records, [v.to_dict() for v in verdicts]),
                   "ledger": {"path": "ledger.jsonl", "head": state.head, "records": state.count},
                   **self.facts.dossier_fields(state.records, self.steps, self._model)}
        from auditor.record.authorization import RUN_COPY, dossier_block, named_by, used_flops

        # what the ledger's latest start or resume record names: the authorization the run holds now
        held = next((n for n in map(named_by, reversed(state.records)) if n is not None), None)
        if held is not None:
            copy = self.run_dir / RUN_COPY
            envelope = json.loads(copy.read_bytes()) if copy.is_file() else None
            tracked["authorization"] = dossier_block(held, envelope, used_flops(estimate.phases, held["phases"]))
        dossier.write(dossier.build(self.preflight, run=self.name, tracked=tracked, signer=self._signer),
                      self.run_dir / dossier.DOSSIER_NAME)
