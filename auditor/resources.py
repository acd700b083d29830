"""Where the templates/ and thresholds/ folders are: inside the installed package (a wheel puts
them at auditor/templates and auditor/thresholds), or at the top of a source checkout."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder is missing from this installation of auditor")
