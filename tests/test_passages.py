import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_lens.passages import PassageSpec, count_words, split_passages


def test_paragraphs_are_merged_to_min_words_and_offsets_cut_exactly():
    text = "Short one.\n\nAnother short paragraph here.\n\n" + " ".join(["word"] * 50)
    spans = split_passages(text, PassageSpec(min_words=5, max_words=60))
    assert spans == [(0, 41), (43, len(text))]
    assert text[spans[0][0] : spans[0][1]] == "Short one.\n\nAnother short paragraph here."


def test_long_paragraph_is_cut_at_sentence_ends():
    sentence = "The robot walked to the door and stopped there. "
    text = sentence * 30  # 9 words each, 270 words, no paragraph break
    spans = split_passages(text, PassageSpec(min_words=10, max_words=100))
    assert all(count_words(text[a:b]) <= 100 for a, b in spans)
    assert all(text[b - 1] == "." for a, b in spans)


def test_bad_bounds_are_rejected_with_the_values():
    with pytest.raises(ValueError, match="min_words=50, max_words=10"):
        PassageSpec(min_words=50, max_words=10)


words = st.text(alphabet=st.sampled_from("ab .!\n"), min_size=0, max_size=400)


@settings(max_examples=200, deadline=None)
@given(words, st.integers(1, 20), st.integers(0, 30))
def test_every_word_lands_in_exactly_one_bounded_passage(text, lo, extra):
    spec = PassageSpec(min_words=lo, max_words=lo + extra)
    spans = split_passages(text, spec)
    assert all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    assert sum(count_words(text[a:b]) for a, b in spans) == count_words(text)
    assert all(count_words(text[a:b]) <= spec.max_words for a, b in spans)
