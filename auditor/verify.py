"""`auditor verify`: a run's ledger chain and sealed dossier, and that they agree."""
from __future__ import annotations

from pathlib import Path

from . import dossier
from .ledger import FILENAME, check_ledger


def verify_target(target: Path) -> tuple[int, list[tuple[str, str]]]:
    """(exit code, [(stream, line)]): 0 intact, 1 tampered, 2 unreadable or nothing to verify."""
    target = Path(target)
    if not target.exists():
        return 2, [("err", f"error: {target} does not exist")]
    ledger_file = target / FILENAME if target.is_dir() else (target if target.name.endswith(".jsonl") else None)
    dossier_file = dossier.locate(target) if target.is_dir() or target.suffix == ".json" else None
    has_ledger = ledger_file is not None and ledger_file.is_file()
    has_dossier = dossier_file is not None and dossier_file.is_file()
    if not has_ledger and not has_dossier:
        return 2, [("err", f"error: {target}: no {FILENAME} or {dossier.DOSSIER_NAME} to verify")]
    lines, code, head = [], 0, None
    if has_ledger:
        code, line, result = check_ledger(ledger_file)
        if code == 2:
            return 2, [("err", line)]
        lines.append(("out", line))
        head = result.head
    if has_dossier:
        try:
            data = dossier.load(dossier_file)
        except dossier.DossierError as exc:
            lines.append(("out" if exc.tampered else "err", str(exc) if exc.tampered else f"error: {exc}"))
            return (1 if exc.tampered else 2), lines
        lines.append(("out", f"{dossier_file}: intact, seal {data['seal']['digest']}"))
        sealed_head = data["seal"].get("ledger_head")
        if has_ledger and sealed_head and head and sealed_head != head and code == 0:
            lines.append(("out", f"{dossier_file}: the dossier seals ledger head {sealed_head}, "
                                 f"the ledger's head is {head}: they do not match"))
            code = 1
    return code, lines
