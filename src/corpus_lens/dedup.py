"""MinHash signatures of flagged passages, LSH candidate pairs, and clusters by union-find.

Signatures equal what ``datasketch.MinHash(num_perm, seed, hashfunc=xxh32)`` gives after
``update`` with each shingle (word n-grams joined by one space, UTF-8), under datasketch's
``affine32`` scheme; they are computed for many passages at once with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

import numpy as np
import xxhash

from corpus_lens.errors import ConfigError


@dataclass(frozen=True)
class DedupSettings:
    """Shingling, hashing and LSH settings; recorded in the manifest."""

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1

    def describe(self) -> dict[str, object]:
        """Settings and library versions, so sketches of different settings are never mixed."""
        return {
            "shingle": f"word {self.ngram}-grams, lower case, joined by one space",
            "hash": "xxh32 (seed 0) of UTF-8 shingle",
            "num_perm": self.num_perm,
            "permutation_scheme": "affine32",
            "minhash_seed": self.seed,
            "lsh_threshold": self.threshold,
            "datasketch": version("datasketch"),
        }


def passage_id(doc_id: str, passage_index: int, shard_key: str) -> str:
    """A passage's id across a whole scan (document ids may repeat across shards).

    ``shard_key`` is the shard's output name, e.g. ``00001-web-00001``: the same for the same
    inputs wherever they are stored.
    """
    return f"{doc_id}#{passage_index}@{shard_key}"


def shingles(text: str, n: int) -> list[bytes]:
    """Distinct word n-grams of a text (lower case), as UTF-8 bytes; short texts give one."""
    words = text.lower().split()
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)})


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _shingle_hashes(text: str, n: int) -> list[int]:
    """xxh32 of every word n-gram (as in ``shingles``, repeats included: they do not change a
    minimum). The text is lower-cased, split and joined once; each n-gram is then a slice of
    those bytes, which avoids building a string per n-gram."""
    words = text.lower().split()
    if len(words) < n:
        return [xxhash.xxh32_intdigest(" ".join(words).encode())] if words else []
    joined = " ".join(words).encode()
    spaces = np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) == 32)
    starts = np.concatenate([[0], spaces + 1])[: len(spaces) + 2 - n]
    ends = np.concatenate([spaces, [len(joined)]])[n - 1 :]
    h = xxhash.xxh32_intdigest
    return [h(joined[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]


def signatures(texts: list[str], settings: DedupSettings, chunk: int = 64) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), dtype uint32.

    Example:
        >>> sig = signatures(["the robot opened the pod bay doors at last"], DedupSettings())
        >>> sig.shape
        (1, 128)
    """
    a, b = _permutations(settings.num_perm, settings.seed)
    out = np.full((len(texts), settings.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    for start in range(0, len(texts), chunk):
        hashes = [_shingle_hashes(t, settings.ngram) for t in texts[start : start + chunk]]
        lengths = np.array([len(x) for x in hashes])
        if not lengths.sum():
            continue
        hv = _fmix32(np.fromiter((v for x in hashes for v in x), np.uint32, int(lengths.sum())))
        # (num_perm, shingles) layout: each permutation runs over a contiguous row, in place.
        with np.errstate(over="ignore"):
            phv = np.multiply.outer(a, hv)
            phv += b[:, None]
        nonempty = np.flatnonzero(lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)])[nonempty]
        out[start + nonempty] = np.minimum.reduceat(phv, offsets, axis=1).T
    return out


def estimate_jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(x == y))


class _UnionFind:
    def __init__(self, ids: list[str]) -> None:
        self.parent = {i: i for i in ids}

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: str, y: str) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            # The smaller id becomes the root, so the cluster id is its smallest member.
            if ry < rx:
                rx, ry = ry, rx
            self.parent[ry] = rx


def cluster(ids: list[str], sigs: np.ndarray, settings: DedupSettings) -> dict[str, str]:
    """Cluster near-duplicates: LSH candidates, confirmed by estimated Jaccard, union-find.

    Args:
        ids: unique passage ids (e.g. "doc_id#passage_index").
        sigs: their signatures, one row each.
        settings: the settings the signatures were made with.

    Returns:
        Each id's cluster id: the smallest id in its cluster (singletons map to themselves).
        The result does not depend on the order of ``ids``.

    Raises:
        ConfigError: when ids repeat or the signature width does not match the settings.
    """
    from datasketch import LeanMinHash, MinHashLSH

    if len(set(ids)) != len(ids):
        raise ConfigError("dedup: passage ids must be unique")
    if len(ids) and sigs.shape[1] != settings.num_perm:
        raise ConfigError(f"dedup: signatures have {sigs.shape[1]} permutations, settings say {settings.num_perm}")
    order = np.argsort(np.array(ids, dtype=object), kind="stable") if ids else np.array([], int)
    ids_sorted = [ids[i] for i in order]
    sigs_sorted = sigs[order]
    lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)
    union = _UnionFind(ids_sorted)
    with lsh.insertion_session() as session:
        for pid, sig in zip(ids_sorted, sigs_sorted):
            session.insert(
                pid,
                LeanMinHash(seed=settings.seed, hashvalues=sig.astype(np.uint32), scheme="affine32"),
                check_duplication=False,
            )
    index = {pid: k for k, pid in enumerate(ids_sorted)}
    for k, (pid, sig) in enumerate(zip(ids_sorted, sigs_sorted)):
        query = LeanMinHash(seed=settings.seed, hashvalues=sig, scheme="affine32")
        for other in lsh.query(query):
            j = index[other]
            if j > k and estimate_jaccard(sig, sigs_sorted[j]) >= settings.threshold:
                union.union(pid, other)
    return {pid: union.find(pid) for pid in ids}
