"""auditor: measure the compute of PyTorch training runs and check it against AI rules.

``from auditor import audit, ComputeAudit``: loaded on first use, so that the command line
and cached preflights do not pay for importing torch.
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["audit", "ComputeAudit", "ComputeBudgetExceeded", "AuthorizationError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "ComputeAudit", "ComputeBudgetExceeded"):
        from auditor import tracking
        return getattr(tracking, name)
    if name == "AuthorizationError":  # a run refused at start (auditor.record.authorization)
        from auditor.record.authorization import AuthorizationError
        return AuthorizationError
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
