"""A registry of runs and models: lineage, cumulative compute, crossings and deadlines (docs/registry.md).

```python
from auditor.registry import Registry, RunRecorder

reg = Registry("postgresql+psycopg://auditor@db/registry")      # None: $AUDITOR_REGISTRY or the SQLite file
reg.add("runs/pretrain", model="m1", stage="pretraining")
reg.add("runs/sft", model="m1-sft", stage="sft", parent="m1", developer="same")
ComputeAudit(..., registry=RunRecorder(reg, model="m1-rl", stage="rl", parent="m1-sft", developer="same"))
```
SQLAlchemy is imported only when a registry is opened.
"""
from __future__ import annotations

from auditor.registry.engine import RegistryError  # noqa: F401  (standard library and SQLAlchemy only)
from auditor.registry.schema import STAGES  # noqa: F401


def __getattr__(name: str):
    if name == "Registry":
        from auditor.registry.store import Registry
        return Registry
    if name == "RunRecorder":
        from auditor.registry.live import RunRecorder
        return RunRecorder
    raise AttributeError(name)
