"""The command line's process settings (auditor/startup.py): set by the console script only."""
import gc
import subprocess
import sys
from importlib.metadata import entry_points

from auditor.cli.startup import THRESHOLDS


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_console_script_is_the_tuned_entry():
    assert entry_points(group="console_scripts")["auditor"].value == "auditor.cli:run"


def test_python_m_auditor_runs_with_the_settings():
    out = _python(
        "import atexit, gc, runpy, sys\n"
        "atexit.register(lambda: print(gc.get_threshold(), gc.get_freeze_count() > 0))\n"
        "sys.argv = ['auditor', '--version']\n"
        "runpy.run_module('auditor', run_name='__main__')\n")
    assert out.split("\n")[:2] == ["auditor, version " + __import__("auditor").__version__, f"{THRESHOLDS} True"]


def test_tuning_sets_thresholds_and_freezes_the_heap_before_shutdown():
    # atexit runs handlers last-in first-out: the probe, registered first, runs after the freeze.
    out = _python(
        "import atexit, gc\n"
        "atexit.register(lambda: print(gc.get_threshold(), gc.get_freeze_count() > 1000))\n"
        "from auditor.cli.startup import tune_for_command_line\n"
        "tune_for_command_line()\n"
        "print(gc.get_freeze_count())\n")
    assert out.split("\n")[:2] == ["0", f"{THRESHOLDS} True"]


def test_library_import_keeps_the_callers_gc_settings():
    out = _python("import gc; before = gc.get_threshold()\n"
                  "import auditor.cli, auditor.tracking, auditor.preflight\n"
                  "print(gc.get_threshold() == before, gc.get_freeze_count())")
    assert out.strip() == "True 0"
    assert gc.get_threshold() != THRESHOLDS  # the test process itself is a library caller too

