"""Golden vectors: fixed key and events in, exact hex out, for every hash and seal.

Frozen for RECORD_VERSION 1 and export format v1. Every log and export already written
depends on these values: the canonical encoding, the leaf and link hashes, the record MAC
(and its fast form used by verify), the key id, and the export manifest's digest and seal.
A change to any domain string or layout breaks a test here. If one must change, that is a
new version (RECORD_VERSION, the export format), never an edit of these literals.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from accessaudit import AccessEvent, EventType, MacKey
from accessaudit.record._chain import check_chain
from accessaudit.record._rows import to_row
from accessaudit.record.encoding import encode
from accessaudit.record.integrity import GENESIS_HASH, leaf_hash, link_hash, seal_batch
from accessaudit.review import export as export_module
from accessaudit.review._arrow import EXPORT_FORMAT
from accessaudit.review.export import MANIFEST, verify_export
from tests.strategies import FIXED_EVENT

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

GOLDEN_EVENT: dict[str, Any] = dict(
    **FIXED_EVENT,
    event_type=EventType.ACCESS_ALLOWED,
    actor_id="agent-7",
    actor_type="human",
    purpose="support_request",
    customer_id="acme",
    data_categories=("contact",),
    attributes={"case": "c-1", "n": 3},
)
#: The second record of the golden chain: the first one's completion.
GOLDEN_SECOND: dict[str, Any] = {
    **GOLDEN_EVENT,
    "event_id": uuid.UUID("0190f3e2-7b3c-7a1d-9c2e-4f5a6b7c8d9f"),
    "occurred_at": datetime(2026, 11, 29, 12, 30, 46, tzinfo=UTC),
    "event_type": EventType.ACCESS_COMPLETED,
    "record_count": 2,
}
GOLDEN_KEY = MacKey(bytes(range(32)))  # 00 01 02 ... 1f

GOLDEN_ENCODING_SHA256 = "0995ba4ca13f1a2b915f51d684823992cac6bc1e0a73f7e50e9d6fa832b15068"
GOLDEN_LEAF = "46a71af4363e885089ec2162d61dac712e686b3a75112c4a4c180027428a5cbb"
GOLDEN_LINK = "42fcff4249a44d51c7e4b948f7c07942618d2da90c542af1a51cb4e2f2cca8c8"
GOLDEN_KEY_ID = "3eb5d3e6f5c90524"
GOLDEN_MAC = "447957d134ba07e1b6cab3500695cfbb5a3226a26309f2977096c25029a5c09e"
#: (seq, leaf hash, chain hash, MAC) of both records, sealed by GOLDEN_KEY after genesis.
GOLDEN_CHAIN = [
    (1, GOLDEN_LEAF, GOLDEN_LINK, GOLDEN_MAC),
    (
        2,
        "032ec3b0b6e09a43f744f0e102b9154c670205c768dbc27ed87e3f8e89b92ca5",
        "6d0e6d8dbff209bd4e3640e63e1c061c1df6335951dc6c8261f54cb70b882760",
        "a4713fb74fa4655b7751ad03e515d863186a7027ba3c6125cfddd9cde189975e",
    ),
]
GOLDEN_MANIFEST_DIGEST = "d1de1aa3f4d783c3c3a64f15446d085eb4e8230645469033d8577d53bdf67374"
GOLDEN_MANIFEST_MAC = "3d45c7b9852c7152bea1bd0a444a56521e5c810366ab52d1127a6bb8e43239b7"
#: When the golden manifest was "written" (the clock is fixed for it).
GOLDEN_MANIFEST_TIME = datetime(2026, 11, 29, 12, 31, tzinfo=UTC)


def _golden_manifest() -> dict[str, Any]:
    """The manifest an export of the golden chain would write, with fixed file facts."""
    chain_hash = GOLDEN_CHAIN[-1][2]
    return {
        "format": EXPORT_FORMAT,
        "chains": {"main": {"last_seq": 2, "last_chain_hash": chain_hash}},
        "files": [
            {
                "path": "day=2026-11-29/main-000000000001-000000000002.parquet",
                "chain_id": "main",
                "first_seq": 1,
                "last_seq": 2,
                "rows": 2,
                "sha256": "ab" * 32,
                "end_chain_hash": chain_hash,
                "bytes": 12345,
            }
        ],
    }


def test_encoding_leaf_and_link_are_frozen() -> None:
    """The encoding, leaf hash and link of a fixed event never change within a version."""
    event = AccessEvent(**GOLDEN_EVENT)
    assert hashlib.sha256(encode("main", 1, event)).hexdigest() == GOLDEN_ENCODING_SHA256
    assert leaf_hash("main", 1, event) == GOLDEN_LEAF
    assert link_hash(GENESIS_HASH, GOLDEN_LEAF) == GOLDEN_LINK


def test_key_id_is_frozen() -> None:
    """The public id of a fixed key: what every stored row and manifest names."""
    assert GOLDEN_KEY.key_id == GOLDEN_KEY_ID


def test_record_mac_is_frozen_in_both_forms() -> None:
    """The record MAC of a fixed link, as ``seal`` and as verify's precomputed sealer."""
    assert GOLDEN_KEY.seal(GOLDEN_LINK) == GOLDEN_MAC
    assert GOLDEN_KEY.link_sealer()(bytes.fromhex(GOLDEN_LINK)).hex() == GOLDEN_MAC


def test_a_sealed_chain_is_frozen_and_verifies() -> None:
    """Two fixed events sealed after genesis: exact seals, and the checker accepts them."""
    events = [AccessEvent(**GOLDEN_EVENT), AccessEvent(**GOLDEN_SECOND)]
    sealed = seal_batch("main", 0, GENESIS_HASH, events, GOLDEN_KEY)
    assert [(s.seq, s.leaf_hash, s.chain_hash, s.mac) for s in sealed] == GOLDEN_CHAIN
    assert {s.mac_key_id for s in sealed} == {GOLDEN_KEY_ID}
    summary, findings = check_chain("main", [to_row(s) for s in sealed], GOLDEN_KEY)
    assert (findings, summary.head_seq, summary.head_hash) == ([], 2, GOLDEN_CHAIN[-1][2])


def test_manifest_seal_is_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest as written at a fixed time: exact digest and MAC, and verify accepts it."""
    monkeypatch.setattr(export_module, "now_utc", lambda: GOLDEN_MANIFEST_TIME)
    manifest = _golden_manifest()
    export_module._write_manifest(tmp_path, manifest, GOLDEN_KEY)
    written = json.loads((tmp_path / MANIFEST).read_text())
    assert written == {
        **_golden_manifest(),
        "updated_at": "2026-11-29T12:31:00.000000Z",
        "mac_key_id": GOLDEN_KEY_ID,
        "mac": GOLDEN_MANIFEST_MAC,
    }
    assert export_module._manifest_digest(written) == GOLDEN_MANIFEST_DIGEST
    assert GOLDEN_KEY.seal_manifest(GOLDEN_MANIFEST_DIGEST) == GOLDEN_MANIFEST_MAC
    # The reading side accepts the seal: what it finds is the listed file's absence, no bad_mac.
    report = verify_export(tmp_path, GOLDEN_KEY)
    assert [(f.code.value, f.seq) for f in report.findings] == [
        ("missing_file", 1),
        ("truncated", 2),
    ]
