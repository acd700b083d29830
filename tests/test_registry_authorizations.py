"""The registry's history of a model's authorizations (docs/authorization.md, "The registry's
history"): recorded when issued (`registry authorize`) and from the runs that held them (`registry
add`), linked by what each supersedes, with what each run used of each, on both backends. Real
tracked runs of the MLP of tests/test_run_authorization.py, whose step costs STEP FLOPs exactly
(its closed form), so every budget and use below is a multiple of STEP worked out from the steps run."""
import hashlib
import json

import pytest
from browser import browse, needs_chromium
from helpers import invoke
from registry_runs import registry_url  # noqa: F401  (a fixture)
from test_registry_attacks import one_line_error, runs_in
from test_run_authorization import STEP, authorize, config, keys, mlp, train  # noqa: F401  (fixtures)

from auditor import ComputeAudit
from auditor.text import sci


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def request_more(config, key, budget: int, old, name="more.json"):
    """A request for more: a new authorization that references the first (--supersedes)."""
    out = config.with_name(name)
    result = invoke("authorize", config, "--key", key, "--budget", str(budget), "--supersedes", old, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def tracked(run_dir, config, auth, keys, steps: int, resume_step=None):
    """An authorized run of ``steps`` steps, its ledger signed by alice (the approver's key is trusted)."""
    model, opt = mlp()
    with ComputeAudit(run_dir, model, opt, config=config, authorization=auth, trusted_keys=[keys["alice"][1]],
                      signing_key=keys["alice"][0], resume_step=resume_step) as run:
        train(run, model, opt, steps)
    return run_dir


def reg(url, *args, code=0):
    result = invoke("registry", *args, "--registry", url)
    assert result.exit_code == code, result.output
    return result


def history(url, model="m", *extra) -> list[dict]:
    return json.loads(reg(url, "show", model, "--rules", "eu-ai-act", "--format", "json", *extra).stdout)[
        "authorizations"]


def test_an_approval_a_run_and_its_request_for_more_make_the_models_history(registry_url, tmp_path, config, keys):
    alice = keys["alice"][1]
    first = authorize(config, keys["alice"][0], 3 * STEP)
    said = reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", alice).output
    assert said.startswith(f"added: authorization {sha(first)[:16]} of model m, {3 * STEP:,} FLOPs")
    assert "approved by alice; new model m" in said
    [entry] = history(registry_url)
    assert (entry["state"], entry["budget_flops"], entry["used_flops"], entry["runs"]) == ("unused", 3 * STEP, 0, [])
    assert entry["approver"]["name"] == "alice" and entry["approver"]["keyid"].startswith("ed25519:")
    assert entry["config_sha256"] == sha(config) and entry["config_name"] == "small.yaml"
    assert entry["run_name"] == "small" and entry["source"] == "signed"
    assert entry["verified"] == "signature verified with the trusted key alice"
    assert entry["preflight"]["total_flops"] == 6 * 10 ** 6 * 10 ** 9      # 6ND of the plan: 1e6 params, 1e9 tokens

    run_dir = tracked(tmp_path / "run", config, first, keys, 2)            # 2 of the 3 steps approved
    reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", "--trusted-key", alice)
    [entry] = history(registry_url)
    [held] = entry["runs"]
    assert (entry["state"], entry["used_flops"], held["used_flops"], held["first_seq"]) == ("current", 2 * STEP,
                                                                                          2 * STEP, 0)
    assert held["run"] == runs_in(registry_url)[0]["run"]

    more = request_more(config, keys["alice"][0], 10 * STEP, first)
    said = reg(registry_url, "authorize", more, "--model", "m", "--trusted-key", alice).output
    assert said.startswith(f"added: authorization {sha(more)[:16]}") and "not in the registry" not in said
    old, new = history(registry_url)
    assert (old["state"], old["superseded_by"], new["state"], new["used_flops"]) == ("superseded", [sha(more)],
                                                                                     "unused", 0)
    assert (new["supersedes"], new["supersedes_recorded"]) == (sha(first), True)

    tracked(run_dir, config, more, keys, 3, resume_step=2)                 # resumed at step 2 with the new budget
    added = reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", "--trusted-key", alice)
    assert added.output.startswith("extended:")
    old, new = history(registry_url)
    assert (old["sha256"], old["state"], old["used_flops"]) == (sha(first), "superseded", 2 * STEP)
    assert (new["sha256"], new["state"], new["used_flops"]) == (sha(more), "current", 5 * STEP)  # the whole run
    assert new["runs"][0]["run"] == old["runs"][0]["run"] and new["runs"][0]["first_seq"] > 0   # from the resume

    text = reg(registry_url, "show", "m", "--rules", "eu-ai-act").output
    assert "authorizations (oldest first):" in text
    first_line = next(line for line in text.splitlines() if line.startswith(sha(first)[:12]))
    assert f"superseded by {sha(more)[:12]}" in first_line and " alice " in first_line
    assert f" {sci(3 * STEP)} " in first_line and f" {sci(2 * STEP)} (66.7%) " in first_line
    new_line = next(line for line in text.splitlines() if line.startswith(sha(more)[:12]))
    assert f" {sci(10 * STEP)} " in new_line and f" {sci(5 * STEP)} (50.0%) " in new_line
    assert " current " in new_line and f" {sha(first)[:12]} " in new_line and " from seq " in new_line

    page = tmp_path / "registry.html"
    reg(registry_url, "html", "-o", page, "--rules", "eu-ai-act")
    html = page.read_text()
    assert "<h3>Authorizations</h3>" in html and f"<code>{sha(more)[:16]}</code>" in html
    assert "50.0%" in html and f"by {sha(more)[:16]}" in html


def test_an_earlier_authorization_is_known_from_the_ledger_until_its_document_is_given(registry_url, tmp_path,
                                                                                      config, keys):
    alice = keys["alice"][1]
    first = authorize(config, keys["alice"][0], 3 * STEP)
    run_dir = tracked(tmp_path / "run", config, first, keys, 3)
    more = request_more(config, keys["alice"][0], 8 * STEP, first)
    tracked(run_dir, config, more, keys, 1, resume_step=3)                 # authorization.json is now `more` only
    reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", "--trusted-key", alice)
    old, new = history(registry_url)
    assert (old["source"], old["approver"]["name"], old["valid_from"], old["budget_flops"]) == ("ledger", None, None,
                                                                                              3 * STEP)
    assert old["approver"]["keyid"] == new["approver"]["keyid"] and old["used_flops"] == 3 * STEP
    assert "known from a run's ledger only" in old["verified"]
    assert (new["source"], new["used_flops"], new["supersedes_recorded"]) == ("signed", 4 * STEP, True)
    filled = reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", alice).output
    assert filled.startswith("filled in: authorization")
    old, _ = history(registry_url)
    assert (old["source"], old["approver"]["name"], old["run_name"]) == ("signed", "alice", "small")
    assert reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", alice).output.startswith(
        "already recorded")


def test_a_request_for_more_whose_first_is_not_recorded_is_kept_with_the_gap_stated(registry_url, config, keys,
                                                                                    tmp_path):
    first = authorize(config, keys["alice"][0], 3 * STEP)
    more = request_more(config, keys["alice"][0], 6 * STEP, first)
    said = reg(registry_url, "authorize", more, "--model", "m", "--trusted-key", keys["alice"][1], "--format",
               "json").stdout
    data = json.loads(said)
    assert (data["outcome"], data["supersedes"], data["budget_flops"]) == ("added", sha(first), 6 * STEP)
    assert any("not in the registry (a gap" in n for n in data["notes"])
    [entry] = history(registry_url)
    assert (entry["supersedes"], entry["supersedes_recorded"], entry["state"]) == (sha(first), False, "unused")
    text = reg(registry_url, "show", "m", "--rules", "eu-ai-act").output
    assert f"{sha(first)[:12]} (not recorded)" in text
    reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", keys["alice"][1])   # the gap closes
    old, new = history(registry_url)
    assert (old["state"], new["supersedes_recorded"]) == ("superseded", True)


def test_an_expired_approval_and_the_day_before_it_was_issued(registry_url, tmp_path, config, keys):
    from datetime import date

    from auditor.cli.common import preflight_dict
    from auditor.record.authorization import make
    from auditor.record.signing import SigningKey, canonical

    envelope = make(config, SigningKey.load(keys["alice"][0]), budget=7 * STEP, preflight=preflight_dict(config,
                    quiet=True), valid_from=date(2026, 1, 5), expires=date(2026, 3, 31))
    path = tmp_path / "old.json"
    path.write_bytes(canonical(envelope) + b"\n")
    reg(registry_url, "authorize", path, "--model", "m", "--trusted-key", keys["alice"][1])
    [entry] = history(registry_url)
    assert (entry["state"], entry["valid_from"], entry["expires"]) == ("expired", "2026-01-05", "2026-03-31")
    [entry] = history(registry_url, "m", "--as-of", "2026-03-31")
    assert entry["state"] == "unused"                                      # its last valid day
    assert history(registry_url, "m", "--as-of", "2026-01-04") == []       # not issued yet


@needs_chromium
def test_attack_a_hostile_run_name_in_an_authorization_is_text_on_the_page(tmp_path, keys):
    """The run's name in an authorization is the config's `run:`, the requester's to choose."""
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"     # the page is the same from either backend
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("run: \"<script>alert(1)</script>\"\nmodel: {parameters: 1e6}\ndata: {tokens: 1e9}\n")
    auth = authorize(hostile, keys["alice"][0], 3 * STEP)
    reg(registry_url, "authorize", auth, "--model", "m", "--trusted-key", keys["alice"][1])
    page_file = tmp_path / "out" / "registry.html"
    reg(registry_url, "html", "-o", page_file, "--rules", "eu-ai-act")
    html = page_file.read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    seen = browse(page_file, tmp_path, lambda page: page.inner_text("body"), width=1200)
    assert seen.errors == [] and seen.dialogs == [] and seen.requests == [page_file.as_uri()]
    assert "<script>alert(1)</script>" in seen.read and "unused" in seen.read


# ---------------------------------------------------------------------- attacks


def test_attack_a_swapped_authorization_beside_the_ledger_is_refused(registry_url, tmp_path, config, keys):
    first = authorize(config, keys["alice"][0], 3 * STEP)
    run_dir = tracked(tmp_path / "run", config, first, keys, 2)
    bigger = authorize(config, keys["alice"][0], 300 * STEP, name="bigger.json")    # validly signed, but not the one
    (run_dir / "authorization.json").write_bytes(bigger.read_bytes())
    for keys_given in (["--trusted-key", keys["alice"][1]], []):
        refused = reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", *keys_given, code=1)
        assert "refused" in one_line_error(refused, 1) and "not the authorization the ledger names" in refused.stderr
    assert runs_in(registry_url) == []
    assert json.loads(reg(registry_url, "models", "--format", "json").stdout) == {"models": []}


def test_attack_a_run_holding_an_authorization_the_trusted_keys_did_not_sign(registry_url, tmp_path, config, keys):
    """The ledger is signed by alice, but the run trusted mallory's approval: refused with alice's key."""
    forged = authorize(config, keys["mallory"][0], 300 * STEP)
    model, opt = mlp()
    run_dir = tmp_path / "run"
    with ComputeAudit(run_dir, model, opt, config=config, authorization=forged, trusted_keys=[keys["mallory"][1]],
                      signing_key=keys["alice"][0]) as run:
        train(run, model, opt, 1)
    refused = reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", "--trusted-key",
                  keys["alice"][1], code=1)
    assert "cannot be trusted" in one_line_error(refused, 1) and "not by a trusted key" in refused.stderr
    assert runs_in(registry_url) == []
    unchecked = reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining")    # no key: recorded,
    assert unchecked.output.startswith("added:")                                             # and marked unchecked
    [entry] = history(registry_url)
    assert (entry["verified"], entry["approver"]["name"], entry["used_flops"]) == (
        "signature not checked (no trusted key given)", "mallory", STEP)


def test_attack_forged_and_edited_authorizations_are_refused_when_recorded(registry_url, tmp_path, config, keys):
    import base64

    from auditor.record.signing import canonical

    alice = keys["alice"][1]
    forged = authorize(config, keys["mallory"][0], 3 * STEP, name="forged.json")
    refused = reg(registry_url, "authorize", forged, "--model", "m", "--trusted-key", alice, code=1)
    assert "does not verify: it is signed by" in one_line_error(refused, 1)
    good = authorize(config, keys["alice"][0], 3 * STEP)
    envelope = json.loads(good.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["budget_flops"] = 300 * STEP                     # a raised budget
    envelope["payload"] = base64.b64encode(canonical(statement)).decode()
    raised = tmp_path / "raised.json"
    raised.write_bytes(canonical(envelope) + b"\n")
    refused = reg(registry_url, "authorize", raised, "--model", "m", "--trusted-key", alice, code=1)
    assert "its signature does not verify with the trusted key alice" in one_line_error(refused, 1)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert "not an authorization (not JSON)" in one_line_error(
        reg(registry_url, "authorize", junk, "--model", "m", "--trusted-key", alice, code=2), 2)
    assert "expected the approver's public key" in one_line_error(
        reg(registry_url, "authorize", good, "--model", "m", code=2), 2)
    missing = tmp_path / "missing.json"
    assert f"{missing}: cannot read the authorization" in one_line_error(
        reg(registry_url, "authorize", missing, "--model", "m", "--trusted-key", alice, code=2), 2)
    assert json.loads(reg(registry_url, "models", "--format", "json").stdout) == {"models": []}


def test_attack_an_authorization_under_another_model_or_a_chain_across_models(registry_url, tmp_path, config, keys):
    alice = keys["alice"][1]
    first = authorize(config, keys["alice"][0], 3 * STEP)
    reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", alice)
    run_dir = tracked(tmp_path / "run", config, first, keys, 1)
    refused = reg(registry_url, "add", run_dir, "--model", "other", "--stage", "pretraining", "--trusted-key", alice,
                  code=2)
    assert f"authorization {sha(first)[:16]}... is recorded for model 'm'" in one_line_error(refused, 2)
    assert runs_in(registry_url) == []
    more = request_more(config, keys["alice"][0], 6 * STEP, first)
    refused = reg(registry_url, "authorize", more, "--model", "other", "--trusted-key", alice, code=2)
    assert "which is recorded for model 'm'; a chain of authorizations is one model's" in one_line_error(refused, 2)
    assert [e["sha256"] for e in history(registry_url)] == [sha(first)]


def test_attack_a_cycle_in_a_hand_edited_registry_is_refused(registry_url, config, keys):
    """SHA-256 links between real documents cannot loop; a registry edited to make the first name
    the second as its predecessor would, and recording the second is then refused."""
    import sqlalchemy as sa

    from auditor.registry.schema import Approval
    from auditor.registry.store import Registry

    alice = keys["alice"][1]
    first = authorize(config, keys["alice"][0], 3 * STEP)
    more = request_more(config, keys["alice"][0], 6 * STEP, first)
    reg(registry_url, "authorize", first, "--model", "m", "--trusted-key", alice)
    with Registry(registry_url) as registry, registry.write() as conn:
        conn.execute(sa.update(Approval).where(Approval.sha256 == sha(first)).values(supersedes=sha(more)))
    refused = reg(registry_url, "authorize", more, "--model", "m", "--trusted-key", alice, code=2)
    assert "its chain of supersedes comes back to" in one_line_error(refused, 2) and "(a cycle)" in refused.stderr
    assert [e["sha256"] for e in history(registry_url)] == [sha(first)]


@pytest.mark.parametrize("field", ["sha256", "budget_flops"])
def test_attack_a_malformed_record_of_the_authorization_in_the_ledger_is_refused(registry_url, tmp_path, field):
    """A ledger whose start record names its authorization with a field of the wrong kind (its
    chain recomputed: no trusted key is given): refused, nothing recorded."""
    from registry_runs import at, daily, write_run

    from auditor.record.ledger import FILENAME, canonical, record_hash

    run_dir = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 2, STEP, "2026-02"), close=at("2026-02-04"),
                        with_dossier=False)
    lines = (run_dir / FILENAME).read_text().splitlines()
    records, prev = [json.loads(line) for line in lines], None
    bad = {"sha256": "f" * 64, "budget_flops": 3 * STEP, "phases": ["train"], "approver": "ed25519:00",
           "config_sha256": "0" * 64, field: "not-a-" + field}
    for rec in records:
        if prev is not None:
            rec["prev"] = prev
        if rec["kind"] == "start":
            rec["meta"]["authorization"] = bad
        rec.pop("hash")
        rec["hash"] = prev = record_hash(rec)
    (run_dir / FILENAME).write_bytes(b"".join(canonical(r) + b"\n" for r in records))
    refused = reg(registry_url, "add", run_dir, "--model", "m", "--stage", "pretraining", code=1)
    assert "malformed" in one_line_error(refused, 1)
    assert runs_in(registry_url) == []


# ---------------------------------------------------------------------- the migration


def test_a_registry_made_at_0001_keeps_its_rows_when_upgraded_to_0002(registry_url, tmp_path, config, keys):
    from datetime import datetime, timezone
    from pathlib import Path

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    import auditor.registry.engine as engine_module
    from auditor.registry.engine import SCHEMA_HEAD, current_revision, make_engine
    from auditor.registry.schema import Edge, Model, Point, Run

    engine = make_engine(registry_url)
    with engine.begin() as conn:                   # the schema as 0001 made it, nothing newer
        alembic = Config()
        alembic.set_main_option("script_location", str(Path(engine_module.__file__).parent / "migrations"))
        alembic.attributes["connection"] = conn
        command.upgrade(alembic, "0001")
    when = datetime(2026, 2, 1, tzinfo=timezone.utc)
    big = 2 ** 80 + 1
    with engine.begin() as conn:
        assert current_revision(conn) == "0001" and not sa.inspect(conn).has_table("authorizations")
        def insert(table, **values):             # ids from the database (a PostgreSQL sequence moves only so)
            return conn.execute(sa.insert(table.__table__).values(**values).returning(table.id)).scalar_one()

        base, sft = (insert(Model, name=name, created_at=when) for name in ("m", "m-sft"))
        insert(Edge, model_id=sft, parent_id=base, relation="fine_tuned", developer="same", created_at=when)
        run = insert(Run, identity="a" * 64, kind="tracked", model_id=base, stage="pretraining", name="pre",
                     total_flops=big, counted_flops=big, rollout_flops=0, low_flops=big, high_flops=big,
                     ledger_head="b" * 64, ledger_seq=1, closed=True, verified="verified", started_at=when,
                     ended_at=when, added_at=when)
        conn.execute(sa.insert(Point.__table__), [{"run_id": run, "seq": 0, "time": when, "step": 0, "counted": 0},
                                                  {"run_id": run, "seq": 1, "time": when, "step": 1, "counted": big}])
    tables = (Model, Edge, Run, Point)

    def rows(conn):
        return {t.__tablename__: [tuple(r) for r in conn.execute(sa.select(t.__table__).order_by(
            *t.__table__.primary_key.columns))] for t in tables}

    with engine.connect() as conn:
        before = rows(conn)
    engine.dispose()

    models = json.loads(reg(registry_url, "models", "--format", "json").stdout)["models"]   # opening upgrades
    assert [(m["model"], m["cumulative_flops"]) for m in models] == [("m", big), ("m-sft", big)]
    engine = make_engine(registry_url)
    with engine.connect() as conn:
        assert current_revision(conn) == SCHEMA_HEAD == "0002"
        assert rows(conn) == before                                        # every row, every column, as it was
        inspector = sa.inspect(conn)
        assert [c["name"] for c in inspector.get_columns("authorizations")] == [
            "id", "sha256", "model_id", "source", "approver_keyid", "approver_name", "budget_flops", "preflight_low",
            "preflight_flops", "preflight_high", "config_name", "config_sha256", "run_name", "valid_from", "expires",
            "supersedes", "signed_bytes", "verified", "added_at"]
        assert [c["name"] for c in inspector.get_columns("run_authorizations")] == [
            "run_id", "authorization_id", "first_seq", "held_from", "used_flops"]
        assert conn.execute(sa.text("SELECT COUNT(*) FROM authorizations")).scalar() == 0
    engine.dispose()
    # and the upgraded registry takes an authorized run beside the old ones
    first = authorize(config, keys["alice"][0], 3 * STEP)
    run_dir = tracked(tmp_path / "run", config, first, keys, 2)
    reg(registry_url, "add", run_dir, "--model", "m-sft", "--stage", "sft", "--trusted-key", keys["alice"][1])
    [entry] = history(registry_url, "m-sft")
    assert (entry["budget_flops"], entry["used_flops"], entry["state"]) == (3 * STEP, 2 * STEP, "current")
    shown = json.loads(reg(registry_url, "show", "m-sft", "--rules", "eu-ai-act", "--format", "json").stdout)
    assert shown["cumulative_flops"] == big + 2 * STEP
