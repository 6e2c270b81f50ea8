"""MedMNIST's download path, for real: a local HTTP server on 127.0.0.1 serves a tiny .npz in MedMNIST's format,
the medmnist package's URL and MD5 for the flag point at it, and medvit loads through medvit.data.medmnist →
medmnist → torchvision's download_url (MD5 check)."""
from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading

import medmnist
import numpy as np
import pytest

from medvit.data import DataError, create_dataset

FLAG = "breastmnist"  # binary, grayscale, 28 px: train/val/test_images (N, 28, 28) uint8, *_labels (N, 1)
SIZES = {"train": 12, "val": 4, "test": 6}


def medmnist_npz() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


class Server:
    """Serves ``files[path] = bytes`` on 127.0.0.1; ``truncate`` sends half of each body after a full
    Content-Length (a dropped connection); ``requests`` counts GETs."""

    def __init__(self):
        self.files, self.truncate, self.requests = {}, False, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if server.truncate else body)
                if server.truncate:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    s = Server()
    yield s
    s.close()


def point_medmnist_at(server, monkeypatch, body: bytes, md5: str | None = None):
    """Serve ``body`` as the flag's file and make the medmnist package download it from there, expecting ``md5``."""
    server.files[f"/{FLAG}.npz"] = body
    info = medmnist.INFO[FLAG]
    monkeypatch.setitem(info, "url", f"{server.url}/{FLAG}.npz?download=1")
    monkeypatch.setitem(info, "MD5", md5 or hashlib.md5(body).hexdigest())
    monkeypatch.setitem(info, "n_samples", dict(SIZES))


def test_download_with_the_right_md5_loads_and_is_not_fetched_again(server, monkeypatch, tmp_path):
    body = medmnist_npz()
    point_medmnist_at(server, monkeypatch, body)
    root = tmp_path / "medmnist"
    train = create_dataset(FLAG, "train", root=root)
    assert server.requests >= 1 and (root / f"{FLAG}.npz").read_bytes() == body
    assert len(train) == SIZES["train"] and train.load_image(0).shape == (28, 28, 1)
    expected = np.load(io.BytesIO(body))
    assert np.array_equal(train.images[..., 0], expected["train_images"])
    assert train.labels.tolist() == expected["train_labels"].reshape(-1).tolist()
    # offline from now on: the verified file on disk is used, nothing is downloaded
    server.close()
    requests = server.requests
    other_root = tmp_path / "data"  # $MEDVIT_DATA_ROOT/medmnist is the same folder, a new cache key
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(other_root))
    (other_root / "medmnist").mkdir(parents=True)
    (other_root / "medmnist" / f"{FLAG}.npz").write_bytes(body)
    assert len(create_dataset(FLAG, "test")) == SIZES["test"] and server.requests == requests


def test_a_download_with_the_wrong_md5_names_the_file_and_what_to_do(server, monkeypatch, tmp_path):
    point_medmnist_at(server, monkeypatch, medmnist_npz(), md5="0" * 32)
    root = tmp_path / "medmnist"
    with pytest.raises(DataError) as err:
        create_dataset(FLAG, "train", root=root)
    message = str(err.value)
    assert "\n" not in message
    assert str(root / f"{FLAG}.npz") in message and "0" * 32 in message and "truncated or corrupt" in message
    assert "Run again to download it anew" in message and f"{server.url}/{FLAG}.npz" in message


def test_a_truncated_download_is_a_clear_error(server, monkeypatch, tmp_path):
    body = medmnist_npz()
    point_medmnist_at(server, monkeypatch, body)
    server.truncate = True
    root = tmp_path / "medmnist"
    with pytest.raises(DataError, match=rf"{FLAG}\.npz is not the official file: its MD5 is [0-9a-f]{{32}}, "
                                        rf"expected {hashlib.md5(body).hexdigest()}"):
        create_dataset(FLAG, "train", root=root)
    # the server works again: the same call downloads the whole file over the partial one
    server.truncate = False
    assert len(create_dataset(FLAG, "val", root=root)) == SIZES["val"]
    assert (root / f"{FLAG}.npz").read_bytes() == body


def test_a_corrupt_file_on_disk_offline_names_the_file_its_md5_and_the_download(server, monkeypatch, tmp_path):
    body = medmnist_npz()
    point_medmnist_at(server, monkeypatch, body)
    server.close()  # offline
    root = tmp_path / "medmnist"
    root.mkdir()
    (root / f"{FLAG}.npz").write_bytes(body[:-100])
    with pytest.raises(DataError, match=rf"{root / FLAG}\.npz is not the official file.*URLError.*check that its "
                                        rf"MD5 is {hashlib.md5(body).hexdigest()}"):
        create_dataset(FLAG, "train", root=root)


def test_no_file_and_no_server_says_where_to_get_it(server, monkeypatch, tmp_path):
    point_medmnist_at(server, monkeypatch, medmnist_npz())
    server.close()
    url = re.escape(medmnist.INFO[FLAG]["url"])
    with pytest.raises(DataError, match=rf"could not download {url} to .*{FLAG}\.npz \(URLError.*Without internet, "
                                        rf"download {url} yourself"):
        create_dataset(FLAG, "train", root=tmp_path / "medmnist")
