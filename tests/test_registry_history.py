"""A model's compute history in the registry: cumulative totals under each rule's basis, the
moment a threshold was crossed (from the ledgers' timestamps) or foreseen (from accepted plans),
and the deadlines that follow. Every figure below is worked out from the inputs, not read back."""
import json
import shutil
from pathlib import Path

import pytest
from helpers import invoke
from registry_runs import E, at, daily, registry_url, three_stages, write_run  # noqa: F401  (a fixture)

from auditor.registry.engine import SCHEMA_HEAD

SB53, KOREA, EU = "us-ca-sb53-frontier-model", "kr-ai-basic-act-high-performance", "eu-ai-act-systemic-risk"
LAB_RULE = """
id: lab-board-notice
title: Tell the board within two weeks of a model passing 1e26, or of a plan showing it will
jurisdiction: internal
citation: {text: "Compute policy v3, section 2", url: "https://wiki.example.com/compute"}
threshold_flops: 1.0e+26
comparison: ">"
basis: cumulative
status: in_force
blocking: false
deadlines:
  - {what: tell the board (met), within_days: 14, from: threshold_met}
  - {what: tell the board (known), within_days: 14, from: threshold_known}
"""




def add(url, target, *args):
    result = invoke("registry", "add", target, *args, "--registry", url)
    assert result.exit_code == 0, result.output
    return result


def status(url, tmp_path, *extra, as_of="2026-04-10"):
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB_RULE)
    result = invoke("registry", "status", "--rules", SB53, "--rules", KOREA, "--rules", EU, "--rules", lab,
                    "--as-of", as_of, "--format", "json", "--registry", url, *extra)
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    return result.exit_code, {m["model"]: {**m, "by_rule": {v["rule"]: v for v in m["verdicts"]}}
                              for m in data["models"]}


def record_three_stages(url, root, lineage: bool):
    runs = three_stages(root)
    if lineage:        # three models in a line, each fine-tuned from the last by the same developer
        add(url, runs["pretraining"], "--model", "m", "--stage", "pretraining")
        add(url, runs["sft"], "--model", "m-sft", "--stage", "sft", "--from", "m", "--developer", "same")
        add(url, runs["rl"], "--model", "m-rl", "--stage", "rl", "--from", "m-sft", "--developer", "same")
        return "m-rl"
    for stage, path in runs.items():   # one model, three stages
        add(url, path, "--model", "m", "--stage", stage)
    return "m"


@pytest.mark.parametrize("lineage", [False, True], ids=["one-model", "three-models"])
def test_three_stage_history_crosses_sb53_in_its_third_stage(registry_url, tmp_path, lineage):
    last = record_three_stages(registry_url, tmp_path / "runs", lineage)
    code, models = status(registry_url, tmp_path)
    model = models[last]
    # 9e25 + 5e24 + (6 x 0.4e24 training + 6 x 0.6e24 rollouts)
    assert model["cumulative_flops"] == 90 * E + 5 * E + 6 * E == 101 * E
    sb53 = model["by_rule"][SB53]
    # after RL day 5 (2026-04-06) the sum is exactly 1e26, not past SB 53's "more than": day 6 passes it
    assert sb53["status"] == "crossed" and sb53["basis_flops"] == 101 * E
    assert (sb53["crossed_after"], sb53["crossed_at"]) == ("2026-04-06T00:00:00Z", "2026-04-07T00:00:00Z")
    assert sb53["notify_by"] is None    # SB 53's deadlines run from incidents, not from the threshold
    korea = model["by_rule"][KOREA]     # Korea's ">=" is met by exactly 1e26, a day earlier
    assert (korea["status"], korea["crossed_at"]) == ("crossed", "2026-04-06T00:00:00Z")
    eu = model["by_rule"][EU]           # 1e25 is passed on pre-training's second day; two weeks to notify
    assert (eu["crossed_at"], eu["notify_by"], eu["days_left"]) == ("2026-02-03T00:00:00Z", "2026-02-17", -52)
    lab = model["by_rule"]["lab-board-notice"]
    assert lab["crossed_at"] == "2026-04-07T00:00:00Z" and lab["foreseen_at"] is None
    assert lab["notify_by"] == "2026-04-21" and lab["days_left"] == 11
    assert [d["due"] for d in lab["deadlines"]] == ["2026-04-21", "2026-04-21"]
    assert code == 1                    # blocking rules crossed: status exits 1, as the gate does
    if lineage:                         # the stages before are models of their own, still under 1e26
        assert models["m-sft"]["cumulative_flops"] == 95 * E and models["m-sft"]["by_rule"][SB53]["status"] == "clear"
        assert models["m"]["by_rule"][EU]["crossed_at"] == "2026-02-03T00:00:00Z"


def test_the_day_before_the_crossing_the_history_is_exactly_at_the_line(registry_url, tmp_path):
    record_three_stages(registry_url, tmp_path / "runs", lineage=False)
    _, models = status(registry_url, tmp_path, as_of="2026-04-06")
    m = models["m"]
    assert m["cumulative_flops"] == 100 * E                  # what was recorded by the end of 2026-04-06
    assert m["by_rule"][SB53]["status"] == "clear" and m["by_rule"][SB53]["crossed_at"] is None
    assert m["by_rule"][KOREA]["status"] == "crossed"


def test_rollouts_count_in_an_rl_stage_unless_told_otherwise(registry_url, tmp_path):
    runs = three_stages(tmp_path / "runs")
    add(registry_url, runs["pretraining"], "--model", "m", "--stage", "pretraining")
    add(registry_url, runs["sft"], "--model", "m", "--stage", "sft")
    add(registry_url, runs["rl"], "--model", "m", "--stage", "rl", "--no-rollouts")
    _, models = status(registry_url, tmp_path)
    assert models["m"]["cumulative_flops"] == 95 * E + 6 * 4 * E // 10       # training FLOPs only: 9.74e25
    assert models["m"]["by_rule"][SB53]["status"] == "clear"


def test_a_plan_makes_the_crossing_foreseeable_before_it_happens(registry_url, tmp_path):
    runs = three_stages(tmp_path / "runs")
    add(registry_url, runs["pretraining"], "--model", "m", "--stage", "pretraining")
    add(registry_url, runs["sft"], "--model", "m", "--stage", "sft")
    config = tmp_path / "rl.yaml"       # 6ND: 6 x 1e11 x 1e13 = 6e24, range +-30 %: 4.2e24 .. 7.8e24
    config.write_text("run: m-rl\nmodel: {parameters: 1.0e+11}\ndata: {tokens: 1.0e+13}\n")
    preflight = invoke("preflight", config, "--format", "json", "--rules", SB53)
    plan = json.loads(preflight.stdout)
    assert (plan["low"], plan["total_flops"], plan["high"]) == (42 * E // 10, 6 * E, 78 * E // 10)
    (tmp_path / "plan.json").write_text(preflight.stdout)
    added = add(registry_url, tmp_path / "plan.json", "--model", "m", "--stage", "rl", "--accepted", "2026-03-20")
    assert "added: plan" in added.output
    _, models = status(registry_url, tmp_path, as_of="2026-03-25")
    lab = models["m"]["by_rule"]["lab-board-notice"]
    # 9.5e25 recorded + the plan's high end 7.8e24 passes 1e26 from the day the plan was accepted
    assert lab["status"] == "clear" and lab["foreseen_status"] == "at_risk" and models["m"]["planned_flops"] == 78 * E // 10
    assert lab["foreseen_at"] == "2026-03-20T00:00:00Z" and lab["crossed_at"] is None
    assert [(d["from"], d["due"]) for d in lab["deadlines"]] == [("threshold_met", None),
                                                                  ("threshold_known", "2026-04-03")]
    assert lab["notify_by"] == "2026-04-03" and lab["days_left"] == 9
    # the RL run made from that plan realizes it: the plan no longer adds, the clock still ran from 2026-03-20
    rl = tmp_path / "rl-run"
    shutil.copytree(runs["rl"], rl)
    from registry_runs import write_dossier
    write_dossier(rl, "m-rl", plan)
    done = add(registry_url, rl, "--model", "m", "--stage", "rl")
    assert "realizes plan" in done.output
    _, models = status(registry_url, tmp_path)
    lab = models["m"]["by_rule"]["lab-board-notice"]
    assert models["m"]["cumulative_flops"] == 101 * E and models["m"]["planned_flops"] == 0
    assert lab["foreseen_at"] == "2026-03-20T00:00:00Z" and lab["crossed_at"] == "2026-04-07T00:00:00Z"
    assert lab["notify_by"] == "2026-04-03"    # the earlier of the two clocks


def test_a_downstream_modifier_is_judged_against_one_third_of_its_base(registry_url, tmp_path):
    base = write_run(tmp_path / "base", at("2026-02-01"), daily(2, 9, 10 * E, "2026-02"), name="base",
                     close=at("2026-02-11"))
    add(registry_url, base, "--model", "open-base", "--stage", "pretraining")
    # another developer fine-tunes it: 31 days of 1e24; one third of 9e25 is 3e25, passed (">") on day 31
    mod = write_run(tmp_path / "mod", at("2026-03-01"), daily(1, 31, E, "2026-03"), close=at("2026-03-31", 12))
    add(registry_url, mod, "--model", "their-ft", "--stage", "sft", "--from", "open-base", "--developer", "other")
    code, models = status(registry_url, tmp_path, "--rules", "eu-ai-act")
    ft = models["their-ft"]["by_rule"]
    one_third = ft["eu-ai-act-modification-systemic-risk"]
    assert one_third["basis"] == "ratio_to_base" and one_third["threshold_exact"] == str(30 * E)
    assert one_third["status"] == "crossed" and one_third["basis_flops"] == 31 * E
    assert (one_third["crossed_after"], one_third["crossed_at"]) == ("2026-03-30T00:00:00Z", "2026-03-31T00:00:00Z")
    assert one_third["notify_by"] == "2026-04-14"
    assert "ratio_to_base" in one_third["basis_note"]            # said: not the cumulative figure
    # under the cumulative rules the base is another developer's: only the modification counts
    assert models["their-ft"]["cumulative_flops"] == 31 * E and ft[EU]["basis_flops"] == 31 * E
    assert ft[SB53]["status"] == "clear"
    # the base itself is no modification: the one-third rules do not cover it
    assert models["open-base"]["by_rule"]["eu-ai-act-modification-systemic-risk"]["status"] == "not_in_force"
    assert code == 1


def test_exactly_one_third_is_not_more_than_one_third(registry_url, tmp_path):
    base = write_run(tmp_path / "base", at("2026-02-01"), daily(2, 9, 10 * E, "2026-02"), close=at("2026-02-11"))
    add(registry_url, base, "--model", "b", "--stage", "pretraining")
    mod = write_run(tmp_path / "mod", at("2026-03-01"), daily(1, 30, E, "2026-03"), close=at("2026-03-31"))
    add(registry_url, mod, "--model", "f", "--stage", "sft", "--from", "b", "--developer", "other")
    _, models = status(registry_url, tmp_path, "--rules", "eu-ai-act")
    assert models["f"]["by_rule"]["eu-ai-act-modification-systemic-risk"]["status"] == "clear"


def test_merges_count_each_parent_whole_and_a_teacher_only_where_a_rule_says(registry_url, tmp_path):
    a = write_run(tmp_path / "a", at("2026-02-01"), [(at("2026-02-02"), 3 * E)], name="a", close=at("2026-02-03"))
    b = write_run(tmp_path / "b", at("2026-02-01"), [(at("2026-02-04"), 5 * E)], name="b", close=at("2026-02-05"))
    add(registry_url, a, "--model", "a", "--stage", "pretraining")
    add(registry_url, b, "--model", "b", "--stage", "pretraining")
    merge = write_run(tmp_path / "merge", at("2026-02-06"), [(at("2026-02-07"), 7)], close=at("2026-02-08"))
    add(registry_url, merge, "--model", "ab", "--stage", "merge", "--from", "a", "--from", "b", "--weight", "0.25",
        "--weight", "3/4", "--developer", "same")
    student = write_run(tmp_path / "s", at("2026-02-09"), [(at("2026-02-10"), 2 * E)], close=at("2026-02-11"))
    add(registry_url, student, "--model", "small", "--stage", "distillation", "--from", "ab", "--developer", "same")
    teacher_rule = tmp_path / "teacher.yaml"
    teacher_rule.write_text(LAB_RULE.replace("lab-board-notice", "counts-teachers").replace(
        "blocking: false", "blocking: false\ncounts_teacher: true").replace("1.0e+26", "1.0e+24"))
    result = invoke("registry", "show", "small", "--rules", teacher_rule, "--rules", SB53, "--format", "json",
                    "--as-of", "2026-03-01", "--registry", registry_url)
    shown = json.loads(result.stdout)
    assert shown["bases"]["cumulative"] == 2 * E                        # the teacher's training is not counted
    assert shown["bases"]["cumulative_with_teacher"] == 2 * E + 8 * E + 7
    edge = shown["lineage"]["parents"][0]
    assert edge["relation"] == "distilled" and edge["teacher_flops"] == 8 * E + 7
    assert {p["model"]: p["weight"] for p in edge["parents"]} == {"a": "1/4", "b": "3/4"}
    by_rule = {v["rule"]: v for v in shown["verdicts"]}
    assert by_rule["counts-teachers"]["basis_flops"] == 10 * E + 7 and by_rule[SB53]["basis_flops"] == 2 * E
    assert "teacher" in by_rule["counts-teachers"]["basis_note"]
    models = json.loads(invoke("registry", "models", "--format", "json", "--registry", registry_url).stdout)
    assert {m["model"]: m["cumulative_flops"] for m in models["models"]} == {
        "a": 3 * E, "b": 5 * E, "ab": 8 * E + 7, "small": 2 * E}


def test_a_count_above_2_63_round_trips_exactly(registry_url, tmp_path):
    import sqlalchemy as sa

    from auditor.registry.exact import ExactInt
    from auditor.registry.store import Registry

    values = [2 ** 63 - 1, 2 ** 63, 2 ** 63 + 1, 10 ** 30 + 7, 10 ** 40 - 1]
    reg = Registry(registry_url)
    table = sa.Table("exact_probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("n", ExactInt))
    table.create(reg.engine)
    with reg.engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "n": v} for i, v in enumerate(values)])
        back = [row.n for row in conn.execute(sa.select(table.c.n).order_by(table.c.id))]
    assert back == values and all(type(v) is int for v in back)
    with pytest.raises(sa.exc.StatementError, match="must be an int, not float"):
        with reg.engine.begin() as conn:
            conn.execute(table.insert(), {"id": 99, "n": 1e30})      # a float is never stored
    # and through a run: a ledger interval of 2^80 + 1 FLOPs (a 64-bit column, or a float, would lose the 1)
    odd = 2 ** 80 + 1
    run = write_run(tmp_path / "odd", at("2026-02-01"), [(at("2026-02-02"), odd)], close=at("2026-02-03"))
    add(registry_url, run, "--model", "odd", "--stage", "pretraining")
    runs = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    assert runs[0]["counted_flops"] == odd and runs[0]["training_flops"] == odd


def test_the_migrated_schema_is_the_models_metadata(registry_url):
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from auditor.registry.schema import Base
    from auditor.registry.store import Registry

    reg = Registry(registry_url)       # opening migrates
    config = Config()
    config.set_main_option("script_location", str(Path(__import__("auditor.registry.engine").registry.engine.__file__)
                                                   .parent / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD
    with reg.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == SCHEMA_HEAD
        inspector = sa.inspect(conn)
        for table in Base.metadata.sorted_tables:   # CHECK constraints, which autogenerate does not compare
            names = {c["name"] for c in inspector.get_check_constraints(table.name)}
            assert names == {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}, table.name
        # and the comparison can fail: a column the migrations do not make is seen
        extra = sa.MetaData()
        for table in Base.metadata.sorted_tables:
            table.to_metadata(extra)
        extra.tables["runs"].append_column(sa.Column("invented", sa.Integer))
        assert any(d[0] == "add_column" for d in compare_metadata(context, extra))


def test_a_ledger_that_grew_is_brought_up_to_date(registry_url, tmp_path):
    path = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 3, E, "2026-02"))        # open: still running
    add(registry_url, path, "--model", "m", "--stage", "pretraining")
    write_run(path, at("2026-02-01"), daily(2, 5, E, "2026-02"), close=at("2026-02-07"))  # the same run, longer
    again = add(registry_url, path, "--model", "m", "--stage", "pretraining")
    assert again.output.startswith("extended:")
    runs = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    assert len(runs) == 1 and runs[0]["counted_flops"] == 5 * E and runs[0]["closed"]
    assert add(registry_url, path, "--model", "m", "--stage", "pretraining").output.startswith("already recorded")


def test_show_gives_the_lineage_tree_and_each_stage(registry_url, tmp_path):
    record_three_stages(registry_url, tmp_path / "runs", lineage=True)
    result = invoke("registry", "show", "m-rl", "--rules", SB53, "--as-of", "2026-04-10", "--registry", registry_url)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "m-rl: own 6.0e24, cumulative 1.01e26" in text
    assert "└─ fine-tuned from m-sft (same developer): own 5.0e24, cumulative 9.5e25" in text
    assert "   └─ fine-tuned from m (same developer): own 9.0e25, cumulative 9.0e25" in text
    assert "rl        1   6.0e24    2.4e24    3.6e24" in text
    assert "2026-04-07T00:00:00" in text


def test_where_the_registry_is_by_default(tmp_path, monkeypatch):
    from auditor.registry.location import resolve_url

    monkeypatch.delenv("AUDITOR_REGISTRY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("AUDITOR_DATA_DIR", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path}/home/.local/share/auditor/registry.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_url(None) == f"sqlite:///{tmp_path}/xdg/auditor/registry.db"
    monkeypatch.setenv("AUDITOR_DATA_DIR", str(tmp_path / "data"))
    assert resolve_url(None) == f"sqlite:///{tmp_path}/data/registry.db"
    monkeypatch.setenv("AUDITOR_REGISTRY", "postgresql://u@h/db")
    assert resolve_url(None) == "postgresql+psycopg://u@h/db"
    assert resolve_url("x/r.db") == f"sqlite:///{Path('x/r.db').absolute()}"
    # and a command with no --registry uses it: the file appears in the data folder
    monkeypatch.delenv("AUDITOR_REGISTRY")
    run = write_run(tmp_path / "r", at("2026-02-01"), [(at("2026-02-02"), 5)], close=at("2026-02-03"))
    assert invoke("registry", "add", run, "--model", "m", "--stage", "other").exit_code == 0
    assert (tmp_path / "data" / "registry.db").is_file()


def test_a_preflight_dossier_is_a_plan_and_a_runless_merge_adds_its_parents(registry_url, tmp_path):
    from auditor.record import dossier

    plan = {"run": "big-plan", "total_flops": 2 * E, "low": E, "high": 3 * E, "estimates": [], "verdicts": []}
    folder = tmp_path / "planned"
    dossier.write(dossier.build(plan, run="big-plan"), folder / dossier.DOSSIER_NAME)
    digest = dossier.load(folder)["seal"]["digest"]
    added = json.loads(add(registry_url, folder, "--model", "p", "--stage", "pretraining", "--accepted", "2026-05-01",
                           "--format", "json").stdout)
    assert (added["kind"], added["run"], added["counted_flops"]) == ("planned", digest, 2 * E)
    [run] = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    assert (run["low"], run["high"], run["accepted_at"]) == (E, 3 * E, "2026-05-01T00:00:00Z")
    a = write_run(tmp_path / "a", at("2026-02-01"), [(at("2026-02-02"), 3 * E)], name="a", close=at("2026-02-03"))
    add(registry_url, a, "--model", "a", "--stage", "pretraining")
    for parent, weight in (("a", "1/2"), ("p", "1/2")):
        linked = invoke("registry", "link", "avg", "--from", parent, "--relation", "merged", "--developer", "same",
                        "--weight", weight, "--registry", registry_url)
        assert linked.exit_code == 0, linked.output
    models = json.loads(invoke("registry", "models", "--format", "json", "--registry", registry_url).stdout)["models"]
    avg = next(m for m in models if m["model"] == "avg")
    assert avg["cumulative_flops"] == 3 * E and avg["runs"] == 0    # a plan is foreseen compute, never counted
    _, judged = status(registry_url, tmp_path, as_of="2026-05-02")
    assert judged["avg"]["planned_flops"] == 3 * E                  # the plan's high end, through the merge
    tracked = write_run(tmp_path / "t", at("2026-02-01"), [(at("2026-02-02"), 1)], name="t", close=at("2026-02-03"))
    refused = invoke("registry", "add", tracked, "--model", "t", "--stage", "sft", "--accepted", "2026-05-01",
                     "--registry", registry_url)
    assert refused.exit_code == 2 and "--accepted" in refused.stderr
