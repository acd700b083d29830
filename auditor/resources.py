"""Where the templates/ and thresholds/ folders are: inside the installed package (a wheel puts
them at auditor/templates and auditor/thresholds), or at the top of a source checkout."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder is missing from this installation of auditor")


def installed_version(package: str) -> str:
    """A package's installed version without importing it ("absent" when not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"
