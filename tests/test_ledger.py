"""The run ledger: format, hashing, tamper detection, torn tails, resume, cadence, check_ledger."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor.record.ledger import (
    FILENAME,
    ZERO,
    LedgerError,
    read_ledger,
    record_hash,
    verify_ledger,
    check_ledger,
)
from auditor.record.ledger_writer import Ledger


def make(run_dir, steps=3, close=True, **kw) -> Path:
    """start, one interval a step (step s: 1000 * s FLOPs), close: steps + 2 records."""
    led = Ledger(run_dir, meta={"run": "t"}, **kw)
    for s in range(1, steps + 1):
        led.append(s, 1000 * s)
    if close:
        led.close(steps)
    del led  # unclosed: dropped as by a crash (its lock released)
    return Path(run_dir) / FILENAME


def lines_of(path) -> list[bytes]:
    return Path(path).read_bytes().splitlines(keepends=True)


def canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def test_round_trip(tmp_path):
    led = Ledger(tmp_path, meta={"run": "demo", "signatures": 2})
    written = [led.append(1, 10, eval_flops=3, recompute_flops=4, ranks=8),
               led.append(5, 20, meta={"note": "épaule"}),
               led.append(5, 0)]
    close = led.close(6)
    assert led.closed and led.close() is None
    st = read_ledger(tmp_path)
    assert st.records[1:] == written + [close]
    assert [r["kind"] for r in st.records] == ["start", "interval", "interval", "interval", "close"]
    assert [r["seq"] for r in st.records] == list(range(5))
    assert st.total == close["total"] == 30 and st.closed and st.torn is None
    assert st.head == close["hash"]
    assert st.records[0]["meta"] == {"run": "demo", "signatures": 2}
    assert st.records[0]["step"] == 0 and st.records[0]["total"] == 0
    with pytest.raises(LedgerError, match="closed"):
        led.append(7, 1)


def test_canonical_hashing_by_hand(tmp_path):
    path = make(tmp_path, steps=2)
    led_lines = lines_of(path)
    prev = "0" * 64
    for raw in led_lines:
        rec = json.loads(raw)
        assert raw == canon(rec) + b"\n"                       # sorted keys, no spaces, one a line
        body = {k: v for k, v in rec.items() if k != "hash"}
        assert rec["hash"] == hashlib.sha256(canon(body)).hexdigest() == record_hash(rec)
        assert rec["prev"] == prev
        assert rec["time"].endswith("Z") and "T" in rec["time"]
        prev = rec["hash"]
    assert ZERO == "0" * 64


def test_non_ascii_meta_is_escaped(tmp_path):
    led = Ledger(tmp_path, meta={"run": "entraînement"})
    led.close()
    raw = (tmp_path / FILENAME).read_bytes()
    assert raw.isascii() and b"\\u00ee" in raw and verify_ledger(tmp_path).ok


def test_every_single_byte_change_is_caught(tmp_path):
    path = make(tmp_path / "run", steps=3)          # 5 records, closed
    original = path.read_bytes()
    assert verify_ledger(path).ok
    ends = [sum(len(x) for x in lines_of(path)[:i + 1]) for i in range(5)]
    target = tmp_path / "t.jsonl"
    specials = b"\n \t0129e-.\"\\{}:,\x00\xff"
    checked = 0
    for pos in range(len(original)):
        subs = {original[pos] ^ (1 << bit) for bit in range(8)} | set(specials)
        subs.discard(original[pos])
        line = next(i for i, end in enumerate(ends) if pos < end) + 1
        for byte in subs:
            target.unlink(missing_ok=True)  # a new file: rewriting one in place can force a disk flush (ext4)
            target.write_bytes(original[:pos] + bytes([byte]) + original[pos + 1:])
            res = verify_ledger(target)
            assert not res.ok and res.bad is not None, (pos, byte)
            # the record named is the changed one, or (when a newline moved) its neighbour
            assert abs(res.bad.line - line) <= 1 and 0 <= res.bad.seq <= 5, (pos, byte, res.bad)
            checked += 1
    assert checked > 15 * len(original)
    # and through the CLI helper: exit 1, the record named
    target.write_bytes(original.replace(b'"flops":2000', b'"flops":2001'))
    code, line, _ = check_ledger(target)
    assert code == 1 and "line 3 (record seq 2)" in line and "hash mismatch" in line


def rewrite(path, index, **changes):
    """Change record ``index`` and re-hash it (so the reason is not just a hash mismatch)."""
    lines = lines_of(path)
    rec = json.loads(lines[index])
    rec.update(changes)
    rec["hash"] = record_hash(rec)
    lines[index] = canon(rec) + b"\n"
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("change, reason", [
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"flops":2000', b'"flops":2001')), "hash mismatch"),
    (lambda p: rewrite(p, 2, flops=2001), "total 3000 != previous total 1000 + flops 2001"),
    (lambda p: rewrite(p, 2, flops=-5, total=995), "negative flops"),
    (lambda p: rewrite(p, 2, seq=7), "seq gap: expected 2, found 7"),
    (lambda p: rewrite(p, 2, prev="ab" * 32), "prev mismatch"),
    (lambda p: rewrite(p, 2, step=0), "step goes backwards"),
    (lambda p: rewrite(p, 2, kind="start"), "start record comes first"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"kind":"interval"', b'"kind": "interval"', 2)), "canonical"),
    (lambda p: p.write_bytes(b"".join(lines_of(p)[:2] + [b"{not json\n"] + lines_of(p)[3:])), "bad JSON"),
])
def test_bad_record_reasons(tmp_path, change, reason):
    path = make(tmp_path, steps=3)
    change(path)
    with pytest.raises(LedgerError) as info:
        read_ledger(path)
    assert info.value.line in (2, 3) and reason in info.value.reason
    res = verify_ledger(path)
    assert not res.ok and reason in res.bad.reason


def test_canonical_form_is_required(tmp_path):
    path = make(tmp_path, steps=2)
    lines = lines_of(path)
    rec = json.loads(lines[1])
    lines[1] = json.dumps(rec, sort_keys=True).encode() + b"\n"     # same content, spaces
    path.write_bytes(b"".join(lines))
    res = verify_ledger(path)
    assert not res.ok and res.bad.seq == 1 and "canonical" in res.bad.reason


def test_torn_tail_of_every_length_is_set_aside(tmp_path):
    full = make(tmp_path / "full", steps=3, close=False)           # start + 3 intervals: a crashed run
    lines = lines_of(full)
    base, last = b"".join(lines[:-1]), lines[-1]
    for cut in range(1, len(last)):
        run = tmp_path / f"r{cut}"
        run.mkdir()
        (run / FILENAME).write_bytes(base + last[:cut])
        st = read_ledger(run)
        assert st.torn == last[:cut] and st.count == 3 and st.total == 3000 and not st.torn_damaged
        res = verify_ledger(run)
        assert res.ok and res.torn and res.torn_bytes == cut and res.records == 3
        led, total = Ledger.resume(run, 2)
        assert total == 3000 and led.resume_info["torn_file"] == "ledger.torn.1"
        assert (run / "ledger.torn.1").read_bytes() == last[:cut]
        led.append(3, 3000)
        led.close()
        after = verify_ledger(run)
        assert after.ok and after.closed and not after.torn and after.total == 6000


def test_torn_tail_after_close_or_damaged_last_line_is_not_ok(tmp_path):
    path = make(tmp_path, steps=2)
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"flops":12')
    res = verify_ledger(path)
    assert not res.ok and res.torn and res.bad.seq == 4 and "after the close record" in res.bad.reason
    path.write_bytes(intact[:-1] + b" ")                          # the last newline changed
    res = verify_ledger(path)
    assert not res.ok and res.bad.line == 4 and "stray bytes" in res.bad.reason


def test_resume_sets_a_damaged_last_line_aside_with_a_warning(tmp_path):
    path = make(tmp_path, steps=3, close=False)
    rewrite(path, 3, flops=7)                                     # a whole last line that fails to verify
    damaged = lines_of(path)[-1]
    assert read_ledger(path).torn_damaged and not verify_ledger(path).ok
    with pytest.warns(RuntimeWarning, match="not what a crash leaves"):
        led, total = Ledger.resume(tmp_path, 2)
    assert total == 3000 and (tmp_path / "ledger.torn.1").read_bytes() == damaged
    resume = read_ledger(tmp_path).records[-1]
    assert resume["meta"]["torn_file"] == "ledger.torn.1" and "total" in resume["meta"]["torn_reason"]
    led.close()
    assert verify_ledger(tmp_path).ok


def test_resume_truncates_and_rolls_back(tmp_path):
    path = make(tmp_path, steps=10, close=False)
    before = lines_of(path)
    led, total = Ledger.resume(tmp_path, 6)
    assert total == sum(1000 * s for s in range(1, 7)) == led.total
    assert (tmp_path / "ledger.rolledback.1").read_bytes() == b"".join(before[7:])   # steps 7-10
    now = lines_of(path)
    assert now[:7] == before[:7]
    resume = json.loads(now[7])
    assert resume["kind"] == "resume" and resume["step"] == 6 and resume["flops"] == 0
    assert resume["total"] == total and resume["prev"] == json.loads(before[6])["hash"]
    assert resume["meta"] == {"rolled_back_file": "ledger.rolledback.1", "rolled_back_records": 4,
                              "rolled_back_flops": sum(1000 * s for s in range(7, 11))}
    for s in range(7, 11):
        led.append(s, 1000 * s)
    led.close()
    res = verify_ledger(tmp_path)
    assert res.ok and res.closed and res.total == sum(1000 * s for s in range(1, 11))
    # a second resume of the closed run numbers its rollback file 2 and keeps file 1
    led, total = Ledger.resume(tmp_path, 8)
    assert total == sum(1000 * s for s in range(1, 9)) and (tmp_path / "ledger.rolledback.2").exists()
    led.close()
    assert verify_ledger(tmp_path).ok


def test_resume_at_the_end_or_after_close_keeps_everything(tmp_path):
    path = make(tmp_path, steps=3)
    before = path.read_bytes()
    led, total = Ledger.resume(tmp_path, 3, meta={"why": "more epochs"})
    assert total == 6000 and path.read_bytes().startswith(before) and led.resume_info == {}
    led.append(4, 4000)
    led.close()
    st = read_ledger(tmp_path)
    assert [r["kind"] for r in st.records][-4:] == ["close", "resume", "interval", "close"]
    assert st.records[-3]["meta"] == {"why": "more epochs"} and st.total == 10000


def test_resume_behind_the_checkpoint_warns(tmp_path):
    make(tmp_path, steps=3, close=False)
    with pytest.warns(RuntimeWarning, match="not recorded"):
        led, total = Ledger.resume(tmp_path, 5)
    assert total == 6000 and led.resume_info["unrecorded_steps"] == [3, 5]
    led.close()


def test_resume_edge_cases(tmp_path):
    led, total = Ledger.resume(tmp_path / "new", 0)                # nothing yet: a fresh start
    assert total == 0 and read_ledger(tmp_path / "new").records[0]["kind"] == "start"
    led.close()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / FILENAME).write_bytes(b"")
    Ledger.resume(tmp_path / "empty", 0)[0].close()
    with pytest.raises(LedgerError, match="not recorded"):
        Ledger.resume(tmp_path / "none", 5)
    late = Ledger(tmp_path / "late")                              # auditing begins at step 10
    late.append(11, 100)
    late.close()
    path = make(tmp_path / "bad", steps=3, close=False)
    rewrite(path, 1, flops=7)
    for _ in range(2):                                            # a failed resume released its lock
        with pytest.raises(LedgerError, match="line 2"):
            Ledger.resume(tmp_path / "bad", 2)
    led, total = Ledger.resume(tmp_path / "late", 11)
    assert total == 100
    led.close()


def test_misuse(tmp_path):
    led = Ledger(tmp_path)
    with pytest.raises(LedgerError, match="in use"):
        Ledger.resume(tmp_path, 0)
    led.append(5, 1)
    with pytest.raises(ValueError, match="never decrease"):
        led.append(4, 1)
    with pytest.raises(TypeError):
        led.append(6, 1.5e3)
    with pytest.raises(TypeError, match="not an optional ledger field"):
        led.append(6, 1, train_flops=3)
    with pytest.raises(ValueError):
        led.append(6, -1)
    with pytest.raises(ValueError):
        led.append(6, 1, ranks=0)
    with pytest.raises(ValueError):
        Ledger(tmp_path / "x", flush_every_steps=0)
    led.close()
    with pytest.raises(LedgerError, match="already holds a ledger"):
        Ledger(tmp_path)
    assert verify_ledger(tmp_path).ok


def test_cadence_steps(tmp_path):
    led = Ledger(tmp_path, flush_every_steps=3)
    on_disk = lambda: len(lines_of(tmp_path / FILENAME))     # read through another handle
    assert on_disk() == 1                                     # the start record is written at once
    led.append(1, 1)
    led.append(2, 1)
    assert on_disk() == 1 and led.pending == 2
    led.append(3, 1)
    assert on_disk() == 4 and led.pending == 0
    led.append(4, 1)
    led.append(10, 1)                                         # 7 steps since the last write
    assert on_disk() == 6
    led.append(11, 1)
    led.flush()
    assert on_disk() == 7
    led.append(12, 1)
    led.close()
    assert on_disk() == 9 and verify_ledger(tmp_path).ok


def test_cadence_seconds_and_default(tmp_path):
    led = Ledger(tmp_path / "s", flush_every_seconds=0.2)
    led.append(1, 1)
    assert len(lines_of(tmp_path / "s" / FILENAME)) == 1
    time.sleep(0.25)
    led.append(2, 1)
    assert len(lines_of(tmp_path / "s" / FILENAME)) == 3
    led.close()
    led = Ledger(tmp_path / "d")                              # no cadence: every record at once
    led.append(1, 1)
    assert len(lines_of(tmp_path / "d" / FILENAME)) == 2
    led.close()


def test_buffered_records_are_written_at_exit(tmp_path):
    src = Path(__file__).resolve().parents[1]
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from auditor.record.ledger_writer import Ledger\n"
            "led = Ledger(sys.argv[1], flush_every_steps=1000)\n"
            "for s in range(1, 6): led.append(s, 10)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(src)], check=True)
    res = verify_ledger(tmp_path)
    assert res.ok and not res.closed and res.records == 6 and res.total == 50


def test_check_ledger_exit_codes_and_lines(tmp_path):
    make(tmp_path / "ok", steps=2)
    code, line, _ = check_ledger(tmp_path / "ok")
    assert code == 0 and "intact, 4 records, closed at step 2, total 3,000 FLOPs" in line
    assert check_ledger(tmp_path / "ok" / FILENAME)[0] == 0
    path = make(tmp_path / "crashed", steps=2, close=False)
    with open(path, "ab") as fh:
        fh.write(b'{"eval')
    code, line, _ = check_ledger(tmp_path / "crashed")
    assert code == 0 and "open (not closed)" in line and "torn last line of 6 bytes" in line
    rewrite(make(tmp_path / "bad", steps=2), 2, flops=5)
    code, line, _ = check_ledger(tmp_path / "bad")
    assert code == 1 and "\n" not in line and "line 3 (record seq 2)" in line
    for missing in (tmp_path / "nope", tmp_path / "ok" / "nope.jsonl"):
        code, line, _ = check_ledger(missing)
        assert code == 2 and line.startswith("error:")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "other.json").write_text('{"run": "x"}\n{"total_flops": 1}\n')
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for bad_input in ("emptydir", "other.json", "empty.jsonl"):
        code, line, _ = check_ledger(tmp_path / bad_input)
        assert code == 2 and line.startswith("error:") and "\n" not in line, bad_input
    if os.geteuid() != 0:
        locked = make(tmp_path / "locked", steps=1)
        locked.chmod(0)
        code, line, _ = check_ledger(locked)
        assert code == 2 and "Permission denied" in line
