import functools
import hashlib
import http.server
import socket
import threading
import zipfile

import pytest

from datamodules import ESC50DataModule
from audio_xai.files import DownloadError, download, extract_zip_into


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over ``tmp_path / 'www'``; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAYLOAD = bytes(range(256)) * 1000


def test_good_file_is_checked_and_moved_into_place(server, tmp_path):
    www, url = server
    (www / "good.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "file.bin"
    download(f"{url}/good.bin", dest, size=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]  # no temporary left behind


@pytest.mark.parametrize("served", ["truncated", "wrong"])
def test_truncated_or_wrong_file_is_never_used(server, tmp_path, served):
    www, url = server
    body = PAYLOAD[: len(PAYLOAD) // 2] if served == "truncated" else bytes(len(PAYLOAD))
    (www / "f.bin").write_bytes(body)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(DownloadError, match="corrupt or incomplete"):
        download(f"{url}/f.bin", dest, size=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_existing_corrupt_file_is_replaced(server, tmp_path):
    www, url = server
    (www / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"half a file")
    download(f"{url}/f.bin", dest, size=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD


def test_no_network_says_how_to_place_the_file(tmp_path):
    with pytest.raises(DownloadError, match="by hand"):
        download(f"http://127.0.0.1:{closed_port()}/x.zip", tmp_path / "x.zip", timeout=5)


def make_archive(mini_root, path):
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(mini_root.rglob("*")):
            if f.is_file():
                zf.write(f, f"ESC-50-master/{f.relative_to(mini_root)}")
    return path


def test_datamodule_downloads_and_extracts(server, tmp_path, mini_root):
    www, url = server
    make_archive(mini_root, www / "master.zip")
    root = tmp_path / "data" / "ESC-50"
    dm = ESC50DataModule(root=str(root), download=True, url=f"{url}/master.zip", batch_size=2)
    dm.prepare_data()
    assert (root / "meta" / "esc50.csv").is_file() and len(list((root / "audio").glob("*.wav"))) == 10
    assert sorted(p.name for p in root.parent.iterdir()) == ["ESC-50"]  # archive and temp folders gone
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["waveform"].shape == (2, 160000)
    dm.prepare_data()  # a second call finds the dataset and does nothing


def test_corrupt_archive_leaves_no_half_dataset(server, tmp_path, mini_root):
    www, url = server
    good = make_archive(mini_root, tmp_path / "good.zip").read_bytes()
    (www / "master.zip").write_bytes(good[: len(good) // 3])
    root = tmp_path / "data" / "ESC-50"
    dm = ESC50DataModule(root=str(root), download=True, url=f"{url}/master.zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        dm.prepare_data()
    assert not root.exists()
    assert list(root.parent.iterdir()) == []


def test_offline_download_names_both_fixes(tmp_path):
    dm = ESC50DataModule(root=str(tmp_path / "ESC-50"), download=True,
                         url=f"http://127.0.0.1:{closed_port()}/master.zip")
    with pytest.raises(DownloadError, match="place ESC-50 at"):
        dm.prepare_data()


def test_archive_without_dataset_is_rejected(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("something/readme.txt", "hello")
    with pytest.raises(DownloadError, match="does not contain meta/esc50.csv"):
        extract_zip_into(archive, tmp_path / "ESC-50", "meta/esc50.csv")
    assert not (tmp_path / "ESC-50").exists()
