"""The ``auditor`` command (click): exit 0 clear, 1 a blocking rule crossed or at risk, 2 bad input.

One module a family of commands, each registering itself on the group in ``common``: ``plan``
(count, preflight, gate), ``records`` (report, verify, keys), ``approval`` (authorize,
authorization), ``rule_commands`` (thresholds), ``demo``; the registry's commands live with the
registry (auditor/registry/commands.py).
"""
from auditor.cli import approval, demo, plan, records, rule_commands  # noqa: F401  (they register their commands)
from auditor.cli.common import main
from auditor.registry.commands import registry

main.add_command(registry)

__all__ = ["main", "run"]


def run() -> None:
    """The console script: the command line with its process settings (auditor/cli/startup.py)."""
    from auditor.cli.startup import tune_for_command_line

    tune_for_command_line()
    main()


if __name__ == "__main__":
    run()
