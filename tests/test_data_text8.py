import zipfile

import pytest

from charlstm.data.text8 import load_text8


def test_zip_reads_first_member(tmp_path):
    path = tmp_path / "t.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("text8", " anarchism originated")
        z.writestr("other", "ignored")
    corpus = load_text8(path, progress=False)
    assert corpus.text == b" anarchism originated"
    assert corpus.normalization is None


def test_text_file_is_normalised(tmp_path):
    path = tmp_path / "speech.txt"
    path.write_text("President: Barack Obama\n\nThank you, 2 times.", encoding="utf-8")
    corpus = load_text8(path, progress=False)
    assert corpus.text == b"president barack obama thank you two times "
    assert corpus.normalization.changed_chars > 0


def test_directory_of_txt_files_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "notes.md").write_text("skipped")
    assert load_text8(tmp_path, progress=False).text == b"first second"


@pytest.mark.parametrize("content", [b"", b"!!! ... 	 ?"])
def test_empty_input_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="holds no text"):
        load_text8(path, progress=False)


def test_undecodable_bytes_are_an_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: undecodable byte 0xe9 at offset 3"):
        load_text8(path, progress=False)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_text8(tmp_path / "nope", progress=False)
    with pytest.raises(ValueError, match="has no .txt files"):
        load_text8(tmp_path, progress=False)


def test_empty_zip(tmp_path):
    path = tmp_path / "e.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(ValueError, match="zip file .* is empty"):
        load_text8(path, progress=False)
