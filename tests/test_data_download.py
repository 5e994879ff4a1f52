import http.server
import threading
from pathlib import Path

import pytest

from charlstm.data import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    requests: list = []

    def do_GET(self):
        self.requests.append(self.path)
        if self.path not in self.files:
            self.send_error(404)
            return
        body, announced = self.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)  # fewer bytes than announced makes a short download

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(dl.URL_ENV, raising=False)
    return tmp_path / "home"


def test_download_caches_once(server, home):
    handler, base = server
    handler.files["/text8.zip"] = (b"x" * 3000, 3000)
    path = dl.fetch_text8(base + "/text8.zip", progress=False)
    assert path == home / "text8.zip" and path.read_bytes() == b"x" * 3000
    assert dl.fetch_text8(base + "/text8.zip", progress=False) == path
    assert handler.requests == ["/text8.zip"]
    assert sorted(p.name for p in home.iterdir()) == ["text8.zip"]


def test_url_from_environment(server, home, monkeypatch):
    handler, base = server
    handler.files["/mirror/t8.zip"] = (b"abc", 3)
    monkeypatch.setenv(dl.URL_ENV, base + "/mirror/t8.zip")
    assert dl.fetch_text8(progress=False).read_bytes() == b"abc"


def test_short_download_leaves_nothing(server, home):
    handler, base = server
    handler.files["/text8.zip"] = (b"y" * 100, 1000)
    with pytest.raises(dl.DownloadError, match="incomplete: got 100 bytes"):
        dl.fetch_text8(base + "/text8.zip", progress=False)
    assert not home.exists() or list(home.iterdir()) == []


def test_size_must_match_expected(server, tmp_path):
    handler, base = server
    handler.files["/f"] = (b"z" * 10, 10)
    with pytest.raises(dl.DownloadError, match="expected 11"):
        dl.download(base + "/f", tmp_path / "f", expected_bytes=11, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_download_error(server, home):
    _, base = server
    with pytest.raises(dl.DownloadError, match="404"):
        dl.fetch_text8(base + "/missing.zip", progress=False)
    assert not (home / "text8.zip").exists()


def test_offline_error_says_how_to_go_on(home):
    import socket
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch_text8(f"http://127.0.0.1:{port}/text8.zip", progress=False)
    message = str(info.value)
    assert "cannot download" in message and "--data" in message
    assert not (home / "text8.zip").exists()


def test_default_url_and_cache_dir(monkeypatch):
    monkeypatch.delenv(dl.URL_ENV, raising=False)
    monkeypatch.delenv(dl.HOME_ENV, raising=False)
    assert dl.text8_url() == "http://mattmahoney.net/dc/text8.zip"
    assert dl.cache_dir() == Path.home() / ".cache" / "charlstm"
