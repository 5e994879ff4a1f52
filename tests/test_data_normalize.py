import pytest

from charlstm.data.normalize import is_text8_form, normalize_text8


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world "),
    ("In 1984 it rained", "in one nine eight four it rained"),
    ("a  b\t\n c", "a b c"),
    ("--dash--", " dash "),
    ("Ünïcode café", " n code caf "),
    ("no change", "no change"),
    ("2", " two "),
])
def test_normalize_follows_text8_rules(text, expected):
    normalised, _ = normalize_text8(text)
    assert normalised == expected.encode()
    assert is_text8_form(normalised)


def test_lowercasing_is_ascii_only_as_in_wikifil():
    # The Kelvin sign lowercases to 'k' in Unicode; text8 would have made it a space.
    assert normalize_text8("\u212aelvin")[0] == b" elvin"


def test_report_counts_what_changed():
    normalised, report = normalize_text8("AB c!!")
    assert normalised == b"ab c "
    assert (report.input_chars, report.output_chars, report.changed_chars) == (6, 5, 4)
    assert report.changed_fraction == pytest.approx(4 / 6)
    assert "6 -> 5 characters" in report.describe()
    assert report.to_dict()["changed_chars"] == 4


def test_is_text8_form():
    assert is_text8_form(b" anarchism originated as a term")
    assert not is_text8_form(b"Anarchism")
    assert not is_text8_form(b"a\nb")
