import pytest

from charlstm.data.vocab import Vocab


def test_vocab_is_sorted_keeps_unicode_and_round_trips():
    text = "“Éa” ba\n…"
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text))
    assert vocab.decode(vocab.encode(text)) == text
    assert Vocab(list(vocab.chars)) == vocab


def test_vocab_names_unknown_characters():
    with pytest.raises(ValueError, match=r"'z', 'q'"):
        Vocab.from_text("abc").encode("azqz")


@pytest.mark.parametrize("bad", [[], ["ab"], ["a", "a"]])
def test_vocab_rejects_malformed_lists(bad):
    with pytest.raises(ValueError):
        Vocab(bad)


def test_a_vocabulary_is_stored_as_one_string_of_its_characters():
    vocab = Vocab.from_text("hello, world")
    assert str(vocab) == " ,dehlorw" and Vocab(str(vocab)) == vocab
