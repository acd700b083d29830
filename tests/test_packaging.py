"""What `pip install .` ships: every package of the source tree (a restructure that adds one must
list it in pyproject.toml, or the installed tool fails to import it while editable installs and the
tests work)."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_source_tree():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "auditor").rglob("__init__.py")}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert {"auditor.templates", "auditor.thresholds", "auditor.data"} <= listed
