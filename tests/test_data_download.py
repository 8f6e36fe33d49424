"""``download=True`` without a working network: a "downloading" line first, a timeout when the
server stalls, and one error naming the URL, the folder and how to place the files by hand.
Only local addresses (127.0.0.1) are contacted."""

import socket
import threading

import pytest
import torchvision

from dcl_cluster.data import DownloadError, LongTailDataModule, sources


@pytest.fixture
def stalling_server():
    """A local server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/cifar-10-python.tar.gz"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def refused_url():
    """A local port with nobody listening."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def _prepare(tmp_path):
    dm = LongTailDataModule("cifar10", data_dir=str(tmp_path / "cifar"), download=True)
    dm.prepare_data()


def test_a_stalled_download_times_out_naming_url_folder_and_manual_steps(tmp_path, stalling_server,
                                                                         monkeypatch, capsys):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", stalling_server)
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT_S", 0.5)
    with pytest.raises(DownloadError) as info:
        _prepare(tmp_path)
    message = str(info.value)
    assert stalling_server in message and str(tmp_path / "cifar") in message
    assert "no answer for 0.5 s" in message and "cifar-10-batches-py" in message
    assert "without download=True" in message
    assert f"downloading cifar10 from {stalling_server}" in capsys.readouterr().err
    assert socket.getdefaulttimeout() is None


def test_an_unreachable_server_is_one_error_not_a_urlerror(tmp_path, refused_url, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", refused_url)
    with pytest.raises(DownloadError, match=rf"could not download cifar10 from {refused_url}.*by hand"):
        _prepare(tmp_path)
