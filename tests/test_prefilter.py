from pathlib import Path

import pyarrow as pa
import pytest

from corpus_lens.classify import default_models_dir
from corpus_lens.errors import ModelError
from corpus_lens.prefilter import Lexicon


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.from_file(default_models_dir() / "lexicon.txt")


@pytest.mark.parametrize(
    "text, hit",
    [
        ("The robots rose against their makers.", True),
        ("HAL 9000 would not open the doors.", True),
        ("Experts debate whether AI will replace radiologists.", True),
        ("Ai Weiwei opened a new exhibition in Berlin.", False),  # cased: "Ai" is not "AI"
        ("She said ai, que saudade, and left.", False),
        ("The roboticist's lab was closed.", True),  # robot\w* covers derived words
        ("A plain paragraph about gardening and tomatoes.", False),
        ("Would you agree if your developers wanted to shut you down?", True),
    ],
)
def test_terms_match_with_case_and_word_boundaries(lexicon, text, hit):
    assert lexicon.matches(text) is hit


def test_vectorized_match_equals_python_match(lexicon, demo_rows):
    texts = [r["text"] for r in demo_rows[:80]] + [None, ""]
    vectorized = lexicon.match_array(pa.array(texts, pa.string())).to_pylist()
    assert vectorized == [bool(t) and lexicon.matches(t) for t in texts]


def test_spans_point_at_terms(lexicon):
    text = "Then the android smiled."
    assert [text[a:b] for a, b in lexicon.spans(text)] == ["android"]


def test_bad_lexicon_file_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "lexicon.txt"
    path.write_text("robot\n")
    with pytest.raises(ModelError, match=r"lexicon.txt:1: term before any \[cased\]/\[uncased\] section"):
        Lexicon.from_file(path)
    path.write_text("[uncased]\nrobo(t\n")
    with pytest.raises(ModelError, match=r"lexicon.txt:2: invalid pattern 'robo\(t'"):
        Lexicon.from_file(path)
    with pytest.raises(ModelError, match="lexicon file not found"):
        Lexicon.from_file(tmp_path / "missing.txt")
