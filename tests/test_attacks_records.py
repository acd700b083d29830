"""Attacks on the records: a forger who can edit the run folder, and the checks that catch them.

The run is a small MLP, 5 steps of batch 8: 40 samples x (3 x (2*32*64 + 2*64*10) - 2*32*64)
= 481,280 training FLOPs (the first layer's input gradient is not computed). A forger halves
every interval, recomputes the hash chain and reseals the dossier: without a trusted key that
passes (and verify says what it proves); with the reviewer's public key it never does.
"""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import invoke

from auditor import ComputeAudit
from auditor.record import dossier
from auditor.record.ledger import (
    FILENAME,
    SIGNATURE_FILENAME,
    ZERO,
    canonical,
    record_hash,
)
from auditor.record.signing import LEDGER_PREDICATE, SigningKey, new_keypair, statement
from auditor.record.verify import check

PER_SAMPLE = 3 * (2 * 32 * 64 + 2 * 64 * 10) - 2 * 32 * 64
TOTAL = 5 * 8 * PER_SAMPLE




@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {name: new_keypair(folder / name) for name in ("alice", "mallory")}


def train(run_dir: Path, key: Path | None, *, steps: int = 5, resume_step: int | None = None, close: bool = True,
          flush_every_steps: int = 2, rules=("eu-ai-act-systemic-risk",)):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # one rule: a small dossier, so that every one of its bytes can be changed in turn
    audit = ComputeAudit(run_dir, model, opt, signing_key=key, flush_every_steps=flush_every_steps,
                         resume_step=resume_step, rules=list(rules)).start()
    for _ in range(steps):
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
    if close:
        audit.stop()
    else:                                # a crash: the ledger is flushed, never closed, no dossier
        audit.checkpoint()
        audit._ledger._release()
    return audit


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory, keys):
    run_dir = tmp_path_factory.mktemp("signed") / "run"
    run = train(run_dir, keys["alice"][0])
    assert run.total_flops == TOTAL
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def forge(run_dir: Path, factor: int = 2, key: Path | None = None) -> int:
    """What someone with write access and no key does: every interval divided by ``factor``, the
    chain recomputed, the signer's traces removed, the dossier's figures rebuilt and resealed;
    with ``key`` (their own), both signed again. Returns the forged total."""
    signer = SigningKey.load(key) if key else None
    path = run_dir / FILENAME
    prev, total, out = ZERO, 0, []
    for line in path.read_bytes().splitlines():
        rec = {k: v for k, v in json.loads(line).items() if k != "hash"}
        if "meta" in rec:
            rec["meta"].pop("signer", None)
            if signer:
                rec["meta"]["signer"] = signer.keyid
            if not rec["meta"]:
                del rec["meta"]
        rec["flops"] //= factor
        total += rec["flops"]
        rec["total"], rec["prev"] = total, prev
        rec["hash"] = prev = record_hash(rec)
        out.append(rec)
    raw = b"".join(canonical(r) + b"\n" for r in out)
    path.write_bytes(raw)
    (run_dir / SIGNATURE_FILENAME).unlink(missing_ok=True)
    if signer:
        last = out[-1]
        predicate = {"seq": last["seq"], "head": last["hash"], "total": last["total"], "step": last["step"],
                     "kind": last["kind"], "bytes": len(raw)}
        envelope = signer.sign(statement(FILENAME, hashlib.sha256(raw).hexdigest(), LEDGER_PREDICATE, predicate))
        (run_dir / SIGNATURE_FILENAME).write_bytes(canonical(envelope) + b"\n")
    data = json.loads((run_dir / dossier.DOSSIER_NAME).read_bytes())
    data.pop("signer", None)
    data["total_flops"] = data["low"] = data["high"] = total
    for key_ in ("flops", "low", "high"):
        data["estimates"][0][key_] = total
    data["tracked"]["series"] = [[r["step"], r["total"]] for r in out]
    data["tracked"]["flops_by_phase"]["train"] = data["estimates"][0]["flops_by_phase"]["train"] = total
    data["tracked"]["hardware_flops"] = total           # (no hardware_flops in the records: it is their flops)
    data["tracked"]["ledger"]["head"] = prev
    dossier.write(dossier.seal(data, signer), run_dir / dossier.DOSSIER_NAME)
    return total


def test_attack_forged_run_passes_integrity_only_and_fails_with_the_trusted_key(signed_run, keys, tmp_path):
    run_dir = copy_of(signed_run, tmp_path)
    assert forge(run_dir) == TOTAL // 2
    plain = invoke("verify", run_dir)
    assert plain.exit_code == 0                              # hashes recomputed: integrity holds...
    assert "proves integrity against accident only" in plain.output   # ...and verify says what that means
    trusted = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert trusted.exit_code == 1, trusted.output
    assert f"{FILENAME}: unsigned" in trusted.output and f"{dossier.DOSSIER_NAME}: unsigned" in trusted.output


def test_attack_forged_run_signed_with_the_forgers_own_key_fails(signed_run, keys, tmp_path):
    run_dir = copy_of(signed_run, tmp_path)
    forge(run_dir, key=keys["mallory"][0])
    assert invoke("verify", run_dir, "--trusted-key", keys["mallory"][1]).exit_code == 0   # her key: consistent
    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 1
    assert result.output.count("not by a trusted key") == 2          # the ledger's head and the dossier


def test_the_signed_original_is_accepted_and_says_who_signed_what(signed_run, keys):
    result = invoke("verify", signed_run, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 0, result.output
    assert f"{FILENAME}: signed by alice (ed25519:" in result.output and "every record covered" in result.output
    assert f"{dossier.DOSSIER_NAME}: signed by alice (ed25519:" in result.output
    assert f"agrees with the ledger: {TOTAL:,} FLOPs over 5 steps" in result.output
    assert "integrity against accident only" not in result.output
    # several trusted keys: any one that signed is enough
    assert invoke("verify", signed_run, "--trusted-key", keys["mallory"][1], "--trusted-key",
                  keys["alice"][1]).exit_code == 0


def test_the_private_key_never_enters_the_run_folder(signed_run, keys):
    private = Path(keys["alice"][0]).read_bytes()
    body = b"".join(line for line in private.splitlines() if not line.startswith(b"-----"))
    for path in signed_run.iterdir():
        raw = path.read_bytes()
        assert body not in raw and str(keys["alice"][0]).encode() not in raw, path.name


@pytest.mark.parametrize("name", [FILENAME, dossier.DOSSIER_NAME, SIGNATURE_FILENAME])
def test_every_single_byte_change_of_a_signed_run_is_caught(signed_run, keys, tmp_path, name):
    run_dir = copy_of(signed_run, tmp_path)
    trusted = [__import__("auditor.record.signing", fromlist=["TrustedKey"]).TrustedKey.load(keys["alice"][1])]
    assert check(run_dir, trusted).code == 0
    path = run_dir / name
    original = path.read_bytes()
    missed = []
    for i in range(len(original)):
        changed = bytearray(original)
        changed[i] = (changed[i] + 1) % 256 if changed[i] != 0x20 else 0x21
        path.write_bytes(bytes(changed))
        if check(run_dir, trusted).code == 0:
            missed.append(i)
    path.write_bytes(original)
    assert missed == [], [original[i - 10:i + 10] for i in missed[:3]]


def test_attack_removing_the_signatures_is_caught_without_the_public_key(signed_run, tmp_path):
    run_dir = copy_of(signed_run, tmp_path)
    (run_dir / SIGNATURE_FILENAME).unlink()
    result = invoke("verify", run_dir)
    assert result.exit_code == 1 and "the signature was removed" in result.output
    data = json.loads((run_dir / dossier.DOSSIER_NAME).read_bytes())
    del data["seal"]["signature"]
    (run_dir / dossier.DOSSIER_NAME).write_bytes(dossier.canonical(data))
    result = invoke("verify", run_dir / dossier.DOSSIER_NAME)
    assert result.exit_code == 1 and "its signature was removed" in result.output


def reseal(run_dir: Path, edit) -> None:
    data = json.loads((run_dir / dossier.DOSSIER_NAME).read_bytes())
    data.pop("signer", None)
    edit(data)
    dossier.write(dossier.seal(data), run_dir / dossier.DOSSIER_NAME)


@pytest.fixture(scope="module")
def unsigned_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("unsigned") / "run"
    train(run_dir, None)
    return run_dir


@pytest.mark.parametrize("field, edit, expected", [
    ("total_flops", lambda d: d.update(total_flops=12345), f"total_flops is 12345 but the ledger says {TOTAL:,}"),
    ("steps", lambda d: d["tracked"].update(steps=4), "tracked.steps is 4 but the ledger says 5"),
    ("eval", lambda d: d["tracked"].update(eval_flops=1), "tracked.eval_flops is 1 but the ledger says 0"),
    ("records", lambda d: d["tracked"]["ledger"].update(records=3), "tracked.ledger.records is 3"),
    ("series", lambda d: d["tracked"]["series"][2].__setitem__(1, 7), "tracked.series differs from the ledger's"),
    ("no head", lambda d: d["tracked"].pop("ledger"), "names no ledger head"),
    ("other head", lambda d: d["tracked"]["ledger"].update(head="ab" * 32), "neither in the ledger nor"),
])
def test_attack_a_resealed_dossier_must_agree_with_its_ledger(unsigned_run, tmp_path, field, edit, expected):
    run_dir = copy_of(unsigned_run, tmp_path)
    reseal(run_dir, edit)
    assert dossier.load(run_dir)                              # the seal itself is fine: it was remade
    result = invoke("verify", run_dir)
    assert result.exit_code == 1 and expected in result.output, result.output


def test_attack_a_dossier_whose_ledger_was_deleted(unsigned_run, tmp_path):
    run_dir = copy_of(unsigned_run, tmp_path)
    (run_dir / FILENAME).unlink()
    for target in (run_dir, run_dir / dossier.DOSSIER_NAME):
        result = invoke("verify", target)
        assert result.exit_code == 1 and "its ledger is missing" in result.output
    moved = tmp_path / "elsewhere.json"                        # a dossier copied away from its ledger
    shutil.copy(run_dir / dossier.DOSSIER_NAME, moved)
    assert invoke("verify", moved).exit_code == 1
    assert invoke("report", run_dir).exit_code == 2            # report renders only what verifies


def rechain(run_dir: Path, edit) -> None:
    """A forger's edit of the ledger records, the chain recomputed after it."""
    path = run_dir / FILENAME
    recs = [json.loads(line) for line in path.read_bytes().splitlines()]
    edit(recs)
    prev, total = ZERO, 0
    for seq, rec in enumerate(recs):
        rec.pop("hash")
        total += rec["flops"]
        rec.update(seq=seq, prev=prev, total=total)
        rec["hash"] = prev = record_hash(rec)
    path.write_bytes(b"".join(canonical(r) + b"\n" for r in recs))


@pytest.mark.parametrize("edit, reason", [
    (lambda recs: recs[-1].update(flops=10 ** 6), "a close record carries FLOPs"),
    (lambda recs: recs[0].update(flops=5), "a start record carries FLOPs"),
    (lambda recs: recs[2].update(time="2020-01-01T00:00:00.000000Z"), "time goes backwards"),
])
def test_attack_a_rechained_ledger_that_breaks_its_rules(unsigned_run, tmp_path, edit, reason):
    run_dir = copy_of(unsigned_run, tmp_path)
    rechain(run_dir, edit)
    result = invoke("verify", run_dir / FILENAME)
    assert result.exit_code == 1 and reason in result.output, result.output


def test_a_resumed_then_crashed_run_is_stale_not_tampered(keys, tmp_path):
    """Closed at step 5 with its dossier; restarted from the checkpoint at step 2 (the records
    after it rolled back), 1 step, then a crash: the dossier is stale, not forged."""
    run_dir = tmp_path / "run"
    train(run_dir, keys["alice"][0], flush_every_steps=1)
    train(run_dir, keys["alice"][0], steps=1, resume_step=2, close=False, flush_every_steps=1)
    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 0, result.output
    assert "stale: the run was resumed from an earlier checkpoint after this dossier" in result.output
    assert "ledger.rolledback.1" in result.output and f"{3 * 8 * PER_SAMPLE:,} FLOPs" in result.output


def test_a_run_extended_after_its_dossier_is_stale_not_tampered(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, None, flush_every_steps=1)
    train(run_dir, None, steps=2, resume_step=5, close=False, flush_every_steps=1)
    result = invoke("verify", run_dir)
    assert result.exit_code == 0, result.output
    assert "stale: the ledger was extended after this dossier" in result.output
    assert f"to {7 * 8 * PER_SAMPLE:,} FLOPs at step 7" in result.output


def test_report_renders_every_dossier_verify_accepts(unsigned_run, tmp_path):
    """Each top-level field removed, or given another type, and resealed: verify rejects it, or
    report renders it in every format; never a traceback."""
    base = json.loads((unsigned_run / dossier.DOSSIER_NAME).read_bytes())
    accepted = rejected = 0
    for key in sorted(k for k in base if k != "seal"):
        for value in (None, "x", 7, [], {}, [1, "a"]):
            run_dir = tmp_path / f"{key}-{type(value).__name__}-{accepted + rejected}"
            shutil.copytree(unsigned_run, run_dir)
            reseal(run_dir, lambda d: d.__setitem__(key, value) if value is not None else d.pop(key))
            verdict = invoke("verify", run_dir)
            assert verdict.exit_code in (0, 1) and verdict.exception is None or isinstance(verdict.exception,
                                                                                         SystemExit)
            if verdict.exit_code == 0:
                accepted += 1
                for fmt in ("text", "json", "md", "html"):
                    shown = invoke("report", run_dir, "--format", fmt)
                    assert shown.exit_code == 0, (key, value, fmt, shown.output)
            else:
                rejected += 1
                shown = invoke("report", run_dir)
                assert shown.exit_code == 2 and isinstance(shown.exception, SystemExit), (key, value)
    assert accepted and rejected
