"""What many test files share: the command line, invoked in-process."""
from click.testing import CliRunner

from auditor.cli import main


def invoke(*args, env=None):
    """`auditor ARGS...` in-process (arguments may be paths); click's Result, stdout and stderr apart."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)
