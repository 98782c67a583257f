import random

import numpy as np
import xxhash
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_lens.dedup import DedupSettings, cluster, estimate_jaccard, shingles, signatures

SETTINGS = DedupSettings()


def _naive(text: str, s: DedupSettings) -> np.ndarray:
    m = MinHash(num_perm=s.num_perm, seed=s.seed, hashfunc=xxhash.xxh32_intdigest)
    for sh in shingles(text, s.ngram):
        m.update(sh)
    return m.hashvalues


def test_batch_signatures_equal_datasketch_minhash(demo_rows):
    texts = [r["text"][:3000] for r in demo_rows[:40]] + ["", "two words"]
    batch = signatures(texts, SETTINGS, chunk=7)
    for text, sig in zip(texts, batch):
        assert np.array_equal(sig, _naive(text, SETTINGS))


def _exact(a: str, b: str, n: int) -> float:
    x, y = set(shingles(a, n)), set(shingles(b, n))
    return len(x & y) / len(x | y) if x | y else 1.0


def _edited(words: list[str], rate: float, rng: random.Random) -> str:
    return " ".join(w if rng.random() > rate else f"edit{rng.randrange(10**6)}" for w in words)


def test_known_pairs_recall_and_false_merges(demo_rows):
    """Real passages and edited copies at controlled similarity, judged by exact Jaccard."""
    rng = random.Random(7)
    bases = [r["text"].split()[:150] for r in demo_rows if len(r["text"].split()) >= 150][:80]
    ids, texts, pairs = [], [], []
    for k, words in enumerate(bases):
        base = " ".join(words)
        for j, rate in enumerate((0.0, 0.004, 0.01, 0.2, 0.35)):
            copy = base if rate == 0 else _edited(words, rate, rng)
            ids.append(f"{k:03d}-{j}")
            texts.append(copy)
            if j:
                pairs.append((f"{k:03d}-0", f"{k:03d}-{j}", _exact(base, copy, SETTINGS.ngram)))
    found = cluster(ids, signatures(texts, SETTINGS), SETTINGS)
    high = [found[a] == found[b] for a, b, jac in pairs if jac >= 0.9]
    low = [found[a] == found[b] for a, b, jac in pairs if jac < 0.5]
    assert len(high) >= 50 and len(low) >= 50
    assert np.mean(high) >= 0.95
    assert np.mean(low) <= 0.05


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(["the", "robot", "said", "no", "and", "then", "it", "left", "the", "room", "quietly"]),
        min_size=6,
        max_size=60,
    ),
    st.integers(0, 5),
)
def test_estimate_tracks_exact_jaccard(words, cut):
    a = " ".join(words)
    b = " ".join(words[cut:] + ["extra", "words", "here", "now", "then"][:cut])
    sa, sb = signatures([a, b], SETTINGS)
    # 128 permutations: standard error <= 0.045; 4.5 sigma keeps the test from flaking.
    assert abs(estimate_jaccard(sa, sb) - _exact(a, b, SETTINGS.ngram)) <= 0.2


@settings(max_examples=20, deadline=None)
@given(st.randoms(use_true_random=False))
def test_clusters_do_not_depend_on_order(rnd):
    base = "the machine decided that the crew could not be trusted with the launch codes any longer " * 3
    texts = [
        base,
        base + "again",
        "an unrelated passage about tomatoes in the garden and how to water them well",
        base.replace("crew", "team"),
    ]
    ids = ["d", "a", "c", "b"]
    sigs = signatures(texts, SETTINGS)
    expected = cluster(ids, sigs, SETTINGS)
    order = list(range(4))
    rnd.shuffle(order)
    shuffled = cluster([ids[i] for i in order], sigs[order], SETTINGS)
    assert shuffled == expected
    assert expected["d"] == "a"  # cluster id = smallest member id
    assert expected["c"] == "c"
