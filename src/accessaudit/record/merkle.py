"""The RFC 6962 (RFC 9162) Merkle tree over a chain's leaf hashes: roots and proofs.

A chain's records are the tree's leaves in seq order, and each record's ``leaf_hash`` is
already the RFC 6962 leaf hash (``SHA-256(0x00 || encoding)``), so the tree is built from
the stored hashes as they are. Interior nodes are ``SHA-256(0x01 || left || right)``; the
tree of ``n`` leaves splits at the largest power of two below ``n``.

Pure functions on raw 32-byte digests, no I/O: ``root`` of a list or of a stream (the
stream keeps only one hash per level, so a million records need about twenty), inclusion
and consistency proofs, and their verification as RFC 9162 sections 2.1.3.2 and 2.1.4.2
specify. Verification returns False for anything malformed: a wrong size, a proof of the
wrong length, hashes of the wrong size.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "TreeBuilder",
    "TreeHeads",
    "consistency_proof",
    "consistency_ranges",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "root",
    "root_from_inclusion_proof",
    "streamed_root",
    "verify_consistency",
    "verify_inclusion",
]

#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_DIGEST_SIZE: Final = 32


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash of ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head of ``leaves`` (leaf hashes, in order), as RFC 6962 defines MTH."""
    return _mth(leaves, 0, len(leaves)) if leaves else EMPTY_ROOT


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return hash_children(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def streamed_root(leaves: Iterable[bytes]) -> bytes:
    """The tree head of leaf hashes read once, in order, in O(log n) memory."""
    tree = TreeBuilder()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


class TreeBuilder:
    """A tree grown one leaf at a time, holding only the subtrees not merged yet.

    Complete subtrees are merged as soon as two of one height are there, so a million
    leaves need about twenty hashes. The head folds what is left right to left, smallest
    to the right, which is the RFC's split at the largest power of two.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaves below, hash), sizes falling
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        size, node = 1, leaf
        stack = self._stack
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, node = left_size + size, hash_children(left, node)
        stack.append((size, node))
        self.size += 1

    def root(self) -> bytes:
        """The head of the tree of every leaf added so far."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = hash_children(left, node)
        return node


class TreeHeads:
    """What checkpoints ask of a chain's leaves, read once, in order, in O(log n) memory.

    ``at`` gives the head of the first ``size`` leaves for each size named up front (the
    sizes of the checkpoints to compare with), ``root`` the head of all of them. With
    ``prove=(old_size, new_size)``, ``proof()`` is the consistency proof between those two
    sizes, the same as ``consistency_proof`` of the leaves held in memory: its nodes are
    heads of disjoint leaf ranges, each built as its leaves go by.
    """

    def __init__(self, sizes: Iterable[int] = (), *, prove: tuple[int, int] | None = None) -> None:
        self._tree = TreeBuilder()
        self._wanted = {size for size in sizes if size > 0}
        self._roots: dict[int, bytes] = {0: EMPTY_ROOT}
        ranges = [] if prove is None else consistency_ranges(*prove)
        # One builder per node of the proof, in the proof's order; and the same nodes in
        # leaf order, to route each leaf to the one range (if any) it falls in.
        self._nodes = [(lo, hi, TreeBuilder()) for lo, hi in ranges]
        self._by_position = sorted(self._nodes, key=lambda node: node[0])
        self._next = 0  # the first range in leaf order the next leaf can fall in

    @property
    def size(self) -> int:
        """How many leaves were added."""
        return self._tree.size

    def add(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        index = self._tree.size
        self._tree.append(leaf)
        if self._tree.size in self._wanted:
            self._roots[self._tree.size] = self._tree.root()
        nodes = self._by_position
        while self._next < len(nodes) and nodes[self._next][1] <= index:
            self._next += 1
        if self._next < len(nodes) and nodes[self._next][0] <= index:
            nodes[self._next][2].append(leaf)

    def root(self) -> bytes:
        """The head of the tree of every leaf added."""
        return self._tree.root()

    def at(self, size: int) -> bytes | None:
        """The head of the first ``size`` leaves (a size named up front), None if unknown."""
        return self._roots.get(size)

    def proof(self) -> list[bytes] | None:
        """The consistency proof asked for; None unless every leaf it covers was added."""
        if any(builder.size != hi - lo for lo, hi, builder in self._nodes):
            return None
        return [builder.root() for _, _, builder in self._nodes]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (RFC 6962 PATH)."""
    if not 0 <= index < len(leaves):
        msg = f"leaf {index} is not in a tree of {len(leaves)}"
        raise ValueError(msg)
    return _path(leaves, index)


def _path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(leaves[:k], index), root(leaves[k:])]
    return [*_path(leaves[k:], index - k), root(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of ``leaves[:old_size]`` is a prefix of this one (PROOF)."""
    return [root(leaves[lo:hi]) for lo, hi in consistency_ranges(old_size, len(leaves))]


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose heads are the consistency proof, in its order.

    RFC 9162's SUBPROOF, with each node named by the leaves below it instead of hashed, so
    that the proof can also be built from leaves read once (``TreeHeads``).
    """
    if not 0 <= old_size <= new_size:
        msg = f"a tree of {new_size} has no prefix of {old_size}"
        raise ValueError(msg)
    if old_size in (0, new_size):
        return []
    return _subproof(old_size, 0, new_size, complete=True)


def _subproof(m: int, lo: int, hi: int, *, complete: bool) -> list[tuple[int, int]]:
    n = hi - lo
    if m == n:
        return [] if complete else [(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete=complete), (lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, complete=False), (lo, lo + k)]


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """The root that ``proof`` leads to from ``leaf`` at ``index``; None if malformed."""
    if not 0 <= index < size or len(leaf) != _DIGEST_SIZE:
        return None
    if any(len(node) != _DIGEST_SIZE for node in proof):
        return None
    # RFC 9162 2.1.3.2: walk up with the leaf's index (fn) and the last index (sn).
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return None  # the proof is longer than the path
        if fn & 1 or fn == sn:
            node = hash_children(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            node = hash_children(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return node if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Whether ``proof`` shows ``leaf`` at ``index`` in the tree of ``size`` with this root."""
    found = root_from_inclusion_proof(index, size, leaf, proof)
    return found is not None and found == expected_root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``old_root`` is a prefix of ``new_root`` (RFC 9162)."""
    if not 0 <= old_size <= new_size or any(len(node) != _DIGEST_SIZE for node in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = hash_children(node, fr), hash_children(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = hash_children(sr, node)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
