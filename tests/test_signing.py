"""Signing keys and envelopes: `auditor keys new`, DSSE checked by hand, the key from the
environment, and a signed run that crashes between flushes."""
import base64
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization

from auditor import ComputeAudit
from auditor.record.ledger import FILENAME, SIGNATURE_FILENAME, read_ledger
from auditor.record.signing import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    SigningError,
    new_keypair,
)
from helpers import invoke




def test_keys_new_writes_a_0600_private_key_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.umask(0o022)
    result = invoke("keys", "new", "alice")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat("alice.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat("alice.pub").st_mode) == 0o644
    key = serialization.load_pem_private_key(Path("alice.key").read_bytes(), password=None)
    pub = serialization.load_pem_public_key(Path("alice.pub").read_bytes())
    assert key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    before = Path("alice.key").read_bytes()
    again = invoke("keys", "new", "alice")
    assert again.exit_code == 2 and "already exists; a key is never overwritten" in again.stderr
    assert Path("alice.key").read_bytes() == before


def test_a_bad_trusted_key_or_signing_key_is_one_line(tmp_path):
    (tmp_path / "not.pub").write_text("hello")
    (tmp_path / "run").mkdir()
    result = invoke("verify", tmp_path / "run", "--trusted-key", tmp_path / "not.pub")
    assert result.exit_code == 2 and result.stderr.startswith(f"error: --trusted-key: {tmp_path / 'not.pub'}: not an")
    with pytest.raises(SigningError, match="cannot read the signing key"):
        ComputeAudit(tmp_path / "r", torch.nn.Linear(2, 2), signing_key=tmp_path / "missing.key").start()
    assert not (tmp_path / "r" / FILENAME).exists()           # refused before the ledger was opened
    key, _ = new_keypair(tmp_path / "r" / "inside")
    with pytest.raises(SigningError, match="inside the run folder"):
        ComputeAudit(tmp_path / "r", torch.nn.Linear(2, 2), signing_key=key).start()
    assert not (tmp_path / "r" / FILENAME).exists()


def dsse_verify(envelope: dict, pub_path: Path) -> dict:
    """DSSE v1 by hand: PAE(type, payload) = 'DSSEv1 <len> <type> <len> <payload>', Ed25519."""
    payload = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + str(len(payload)).encode() + b" " + payload
    public = serialization.load_pem_public_key(pub_path.read_bytes())
    (sig,) = envelope["signatures"]
    public.verify(base64.b64decode(sig["sig"]), pae)          # raises InvalidSignature otherwise
    return json.loads(payload)


def small_run(run_dir: Path, steps: int, *, env_key: Path | None = None, key: Path | None = None,
              resume_step=None, crash_after=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    audit = ComputeAudit(run_dir, model, opt, signing_key=key, flush_every_steps=2, flush_every_seconds=None,
                         resume_step=resume_step).start()
    for step in range(steps):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        if crash_after is not None and step + 1 == crash_after:
            audit._ledger._buffer.clear()                     # kill -9: what was not flushed is lost
            audit._ledger._release()
            return audit
    audit.stop()
    return audit


def test_the_key_from_the_environment_signs_ledger_and_dossier(tmp_path, monkeypatch):
    key, pub = new_keypair(tmp_path / "ci")
    monkeypatch.setenv("AUDITOR_SIGNING_KEY", str(key))
    small_run(tmp_path / "run", 4)
    envelope = json.loads((tmp_path / "run" / SIGNATURE_FILENAME).read_text())
    statement = dsse_verify(envelope, pub)
    assert envelope["payloadType"] == PAYLOAD_TYPE and statement["_type"] == STATEMENT_TYPE
    raw = (tmp_path / "run" / FILENAME).read_bytes()
    state = read_ledger(tmp_path / "run")
    assert statement["subject"] == [{"name": FILENAME, "digest": {"sha256": __import__("hashlib").sha256(raw).hexdigest()}}]
    assert statement["predicate"]["head"] == state.head and statement["predicate"]["total"] == state.total
    assert state.records[0]["meta"]["signer"] == envelope["signatures"][0]["keyid"]
    data = json.loads((tmp_path / "run" / "dossier.json").read_text())
    dossier_statement = dsse_verify(data["seal"]["signature"], pub)
    assert dossier_statement["subject"][0]["digest"]["sha256"] == data["seal"]["digest"]
    assert data["signer"] == {"keyid": envelope["signatures"][0]["keyid"], "name": "ci"}
    assert invoke("verify", tmp_path / "run", "--trusted-key", pub).exit_code == 0


def test_a_signed_run_that_crashes_between_flushes_then_resumes(tmp_path):
    """Flushes (and signatures) every 2 steps; a crash after step 3 loses step 3's unflushed
    record, so the ledger ends at step 2, signed. A crash between a flush and its signature
    leaves records after the signed head: named, and exit 1 with the trusted key, until the
    run resumes and signs again."""
    key, pub = new_keypair(tmp_path / "alice")
    run_dir = tmp_path / "run"
    small_run(run_dir, 5, key=key, crash_after=3)
    state = read_ledger(run_dir)
    assert state.step == 2 and not state.closed
    assert invoke("verify", run_dir, "--trusted-key", pub).exit_code == 0
    signed = (run_dir / SIGNATURE_FILENAME).read_bytes()
    small_run(run_dir, 2, key=key, resume_step=2, crash_after=2)   # steps 3, 4 flushed and signed
    (run_dir / SIGNATURE_FILENAME).write_bytes(signed)         # as if the crash fell between the flush
                                                               # of step 4 and its signature
    result = invoke("verify", run_dir, "--trusted-key", pub)
    assert result.exit_code == 1 and "are not covered by a signature" in result.output, result.output
    small_run(run_dir, 1, key=key, resume_step=4)              # resumed: signed again, closed
    final = invoke("verify", run_dir, "--trusted-key", pub)
    assert final.exit_code == 0 and "every record covered" in final.output, final.output
