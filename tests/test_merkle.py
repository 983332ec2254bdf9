"""The RFC 6962 Merkle tree: published known answers, a corrupted-proof matrix, properties.

Known answers are the test vectors of transparency-dev/merkle, ``proof/verify_test.go``
(Apache-2.0; https://github.com/transparency-dev/merkle/blob/main/proof/verify_test.go),
which are the RFC 6962 reference values of certificate-transparency: eight leaves, the root
of every prefix, and inclusion and consistency proofs among them. The corrupted-proof
matrix follows the same file's ``corruptInclusionProof`` and ``corruptConsistencyProof``.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessaudit.record.merkle import (
    EMPTY_ROOT,
    TreeHeads,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    root,
    streamed_root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
HASHES = [hash_leaf(data) for data in LEAVES]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf number, 1-based; tree size; path)
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (3, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        2,
        5,
        _h(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.mark.parametrize("size", range(1, 9))
def test_the_root_of_every_prefix_is_the_published_one(size: int) -> None:
    """Roots of 1..8 leaves, built from a list and from a stream."""
    assert root(HASHES[:size]) == ROOTS[size - 1]
    assert streamed_root(iter(HASHES[:size])) == ROOTS[size - 1]


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    """RFC 6962: MTH({}) = SHA-256()."""
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION)
def test_inclusion_proofs_are_the_published_ones_and_verify(
    leaf: int, size: int, path: list[bytes]
) -> None:
    """The path we build equals the reference's, and verifies against the root."""
    assert inclusion_proof(HASHES[:size], leaf - 1) == path
    assert verify_inclusion(leaf - 1, size, HASHES[leaf - 1], path, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_are_the_published_ones_and_verify(
    old: int, new: int, proof: list[bytes]
) -> None:
    """The proof we build equals the reference's, and verifies between the two roots."""
    assert consistency_proof(HASHES[:new], old) == proof
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def _corrupt_inclusion(
    index: int, size: int, path: list[bytes], top: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    probes = [
        ("index - 1", index - 1, size, path, top, leaf),
        ("index + 1", index + 1, size, path, top, leaf),
        ("index ^ 2", index ^ 2, size, path, top, leaf),
        ("size * 2", index, size * 2, path, top, leaf),
        ("size // 2", index, size // 2, path, top, leaf),
        ("wrong leaf", index, size, path, top, b"WrongLeaf"),
        ("empty root", index, size, path, EMPTY_ROOT, leaf),
        ("random root", index, size, path, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*path, b""], top, leaf),
        ("trailing root", index, size, [*path, top], top, leaf),
        ("preceding garbage", index, size, [b"", *path], top, leaf),
        ("preceding root", index, size, [top, *path], top, leaf),
    ]
    for i in range(len(path)):
        flipped = [*path]
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 3", index, size, flipped, top, leaf))
    if path:
        probes.append(("removed component", index, size, path[:-1], top, leaf))
    if len(path) > 1:
        probes.append(
            ("inserted component", index, size, [path[0], SOME_HASH, *path[1:]], top, leaf)
        )
    return probes


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION[1:])
def test_no_corrupted_inclusion_proof_verifies(leaf: int, size: int, path: list[bytes]) -> None:
    """Wrong index, size, leaf or root; garbage, flipped bits, missing or extra nodes."""
    probes = _corrupt_inclusion(leaf - 1, size, path, ROOTS[size - 1], HASHES[leaf - 1])
    accepted = [name for name, *args in probes if verify_inclusion(*args)]  # type: ignore[arg-type]
    assert accepted == []


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY[1:])
def test_no_corrupted_consistency_proof_verifies(old: int, new: int, proof: list[bytes]) -> None:
    """Wrong sizes or roots, swapped roots, empty, truncated, padded or bit-flipped proofs."""
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes: list[tuple[str, int, int, bytes, bytes, list[bytes]]] = [
        ("old - 1", old - 1, new, r1, r2, proof),
        ("old + 1", old + 1, new, r1, r2, proof),
        ("old ^ 2", old ^ 2, new, r1, r2, proof),
        ("new * 2", old, new * 2, r1, r2, proof),
        ("new // 2", old, new // 2, r1, r2, proof),
        ("wrong root1", old, new, b"WrongRoot", r2, proof),
        ("wrong root2", old, new, r1, b"WrongRoot", proof),
        ("swapped roots", old, new, r2, r1, proof),
        ("empty proof", old, new, r1, r2, []),
        ("trailing garbage", old, new, r1, r2, [*proof, b""]),
        ("trailing root1", old, new, r1, r2, [*proof, r1]),
        ("trailing root2", old, new, r1, r2, [*proof, r2]),
        ("preceding garbage", old, new, r1, r2, [b"", *proof]),
        ("preceding root1", old, new, r1, r2, [r1, *proof]),
        ("preceding root2", old, new, r1, r2, [r2, *proof]),
        ("preceding proof[0]", old, new, r1, r2, [proof[0], *proof]),
        ("truncated", old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = [*proof]
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 4", old, new, r1, r2, flipped))
    accepted = [name for name, *args in probes if verify_consistency(*args)]  # type: ignore[arg-type]
    assert accepted == []


def test_trivial_consistency_cases() -> None:
    """Equal sizes need equal roots and no proof; the empty tree precedes everything."""
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    assert verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[2], [EMPTY_ROOT])
    assert not verify_consistency(2, 1, ROOTS[1], ROOTS[0], [])  # the past cannot grow


# -- properties over arbitrary trees -----------------------------------------------------------

trees = st.lists(st.binary(max_size=8), min_size=1, max_size=70).map(
    lambda data: [hash_leaf(d) for d in data]
)


@given(trees, st.data())
def test_every_leaf_has_an_inclusion_proof_that_verifies(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """For any tree and leaf, the proof verifies, and not for another leaf or position."""
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    top = root(leaves)
    assert verify_inclusion(index, len(leaves), leaves[index], proof, top)
    assert len(proof) <= len(leaves).bit_length()
    other = data.draw(st.integers(0, len(leaves) - 1))
    if leaves[other] != leaves[index]:
        assert not verify_inclusion(index, len(leaves), leaves[other], proof, top)


@given(trees, st.data())
def test_every_prefix_has_a_consistency_proof_that_verifies(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Any prefix is proven consistent; a changed leaf in the prefix breaks the proof."""
    old = data.draw(st.integers(0, len(leaves)))
    proof = consistency_proof(leaves, old)
    old_root, new_root = root(leaves[:old]), root(leaves)
    assert verify_consistency(old, len(leaves), old_root, new_root, proof)
    if 0 < old < len(leaves):
        changed = [*leaves]
        changed[data.draw(st.integers(0, old - 1))] = hash_leaf(b"forged")
        if changed != leaves:
            forked_root = root(changed)
            assert not verify_consistency(old, len(leaves), old_root, forked_root, proof)


@given(trees)
def test_the_streamed_root_equals_the_recursive_one(leaves: list[bytes]) -> None:
    """O(log n) memory gives the same root as the RFC's recursive definition."""
    assert streamed_root(iter(leaves)) == root(leaves)


def test_a_proof_too_short_for_the_claimed_size_fails() -> None:
    """A 4-leaf path does not prove inclusion in a 5-leaf tree, even against the 4-leaf root."""
    path = inclusion_proof(HASHES[:4], 0)
    assert verify_inclusion(0, 4, HASHES[0], path, ROOTS[3])
    assert not verify_inclusion(0, 5, HASHES[0], path, ROOTS[3])
    assert not verify_inclusion(0, 5, HASHES[0], path, ROOTS[4])


@given(trees, st.data())
def test_tree_heads_read_once_match_the_tree_in_memory(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Heads at chosen sizes and a consistency proof, built as the leaves stream by.

    They are what checkpoints compare and prove, in O(log n) memory: the same as the
    recursive definitions over every leaf held in a list.
    """
    sizes = data.draw(st.lists(st.integers(0, len(leaves) + 2), max_size=5))
    old = data.draw(st.integers(0, len(leaves)))
    heads = TreeHeads(sizes, prove=(old, len(leaves)))
    for leaf in leaves:
        heads.add(leaf)
    assert heads.size == len(leaves)
    assert heads.root() == root(leaves)
    for size in sizes:
        expected = root(leaves[:size]) if size <= len(leaves) else None
        assert heads.at(size) == expected
    assert heads.proof() == consistency_proof(leaves, old)


@given(trees, st.data())
def test_a_proof_is_not_given_before_its_leaves_are_all_there(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Asked for a proof up to one leaf more than it was given, TreeHeads has none to give."""
    old = data.draw(st.integers(1, len(leaves)))
    heads = TreeHeads(prove=(old, len(leaves) + 1))
    for leaf in leaves:
        heads.add(leaf)
    assert heads.proof() is None
