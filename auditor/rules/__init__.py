"""Rules: the thresholds of the texts (thresholds/*.yaml, users' files) and the verdicts on a run's
figures (docs/rules.md). ``rule_file`` checks rule files into Rule objects; ``selection`` picks
the rules to judge by; ``verdicts`` judges a run's figures by each."""
from auditor.estimate import Figures
from auditor.rules.rule_file import (
                                    Rule,
                                    RuleError,
                                    RuleSet,
                                    rule_file_json_schema,
                                    validate_rule_file,
)
from auditor.rules.selection import bundled_rules, default_rules, load_rules, rule_files
from auditor.rules.verdicts import (
                                    GATE_FAILING,
                                    Verdict,
                                    as_of_day,
                                    blocking_limits,
                                    evaluate,
                                    evaluate_rule,
                                    fails_gate,
                                    passes,
                                    rule_activity,
)

__all__ = ["Figures", "blocking_limits",
           "Rule", "RuleError", "RuleSet", "rule_file_json_schema", "validate_rule_file", "bundled_rules",
           "default_rules", "load_rules", "rule_files", "GATE_FAILING", "Verdict", "as_of_day", "evaluate",
           "evaluate_rule", "fails_gate", "passes", "rule_activity"]
