import http.server
import threading

import pytest

from charlstm.data.download import cache_dir, download


@pytest.fixture
def server():
    routes, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            status, body, declared = routes.get(self.path, (404, b"missing", None))
            self.send_response(status)
            self.send_header("Content-Length", str(declared if declared is not None else len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, requests
    httpd.shutdown()
    httpd.server_close()


def test_download_writes_the_file_and_then_uses_the_cache(tmp_path, server):
    base, routes, requests = server
    body = bytes(range(256)) * 1000
    routes["/f"] = (200, body, None)
    dest = tmp_path / "sub" / "f.bin"
    assert download(base + "/f", dest, expected_size=len(body), progress=False) == dest
    assert dest.read_bytes() == body
    download(base + "/f", dest, expected_size=len(body), progress=False)
    assert requests == ["/f"]
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]


def test_a_failed_download_leaves_nothing(tmp_path, server):
    base, _, _ = server
    with pytest.raises(ValueError, match="could not download"):
        download(base + "/absent", tmp_path / "f.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_size_leaves_nothing_and_a_partial_file_is_replaced(tmp_path, server):
    base, routes, requests = server
    routes["/f"] = (200, b"12345", None)
    with pytest.raises(ValueError, match="expected 9"):
        download(base + "/f", tmp_path / "f.bin", expected_size=9, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f.bin").write_bytes(b"12")
    download(base + "/f", tmp_path / "f.bin", expected_size=5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == b"12345"


def test_cache_dir_follows_charlstm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    assert cache_dir() == tmp_path
