"""A fine-tune's config judged on its base model's recorded history: ``auditor preflight CONFIG
--registry URL`` and ``auditor gate ... --registry URL``.

A config's ``lineage.base_model`` that names a registered model gets that model's cumulative
compute, as recorded, as ``lineage.base_compute_flops``: the cumulative rules (SB 53, RAISE,
Korea, the EU's presumption) then add it to the run when the developer is the same (or not
stated), and the EU's one-third rules compare the run with a third of it when another developer
modifies it, without anyone copying the figure into the config by hand. A figure the config
gives that differs from the record is replaced by the record, and the note says so.
"""
from __future__ import annotations

from typing import Any

from auditor.registry.location import shown
from auditor.text import sci
from auditor.text import printable


class BaseCompute:
    """``lineage_from`` for auditor.preflight.assess: one registry read, shared by every config of a gate."""

    def __init__(self, url: str | None):
        from auditor.registry.store import Registry

        self.registry = Registry(url)
        self._graph = None

    @property
    def graph(self):
        if self._graph is None:
            self._graph = self.registry.graph()
        return self._graph

    def __call__(self, lineage: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        name = lineage.get("base_model")
        if not name:
            return lineage, None
        where = shown(self.registry.url)
        model_id = self.graph.id_of(name)
        given = lineage.get("base_compute_flops")
        if model_id is None:
            return lineage, (f"the base model {printable(name)!r} is not in the registry {where}: the config's own "
                             f"lineage figures stand")
        recorded = self.graph.cumulative(model_id)
        if recorded is None:
            return lineage, (f"the base model {printable(name)!r} is in the registry {where} with no compute recorded: "
                             f"the config's own lineage figures stand")
        runs = sum(len(self.graph.tracked(m)) for m in self.graph.closure(model_id))
        note = (f"the base model's compute, {sci(recorded)} FLOP, is {printable(name)}'s cumulative compute as the "
                f"registry {where} records it ({runs} run(s))")
        if given is not None and int(given) != recorded:
            note += f"; the config's lineage.base_compute_flops ({sci(int(given))}) differs and is not used"
        return {**lineage, "base_compute_flops": recorded, "base_compute_source": "registry"}, note
