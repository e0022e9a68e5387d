"""polab.scaled.hub.offline_hub_check: fail fast without network, use the cache, leave local folders alone."""

import socket
import time

import pytest

from polab.scaled.hub import HubUnavailableError, is_hub_id, offline_hub_check


@pytest.fixture
def no_network(monkeypatch):
    """Point the hub at a closed local port (the connection is refused at once) and clear the offline flags."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _fake_cache(root, repo_id):
    """The layout huggingface_hub's cache uses: models--org--name/{refs/main, snapshots/REV/config.json}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "snapshots" / rev / "config.json").write_text("{}")
    return root


def test_local_folder_needs_no_network(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a local folder must not touch the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert offline_hub_check(str(tmp_path)) is False


def test_unreachable_hub_fails_fast_with_the_model_named(no_network, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=r"'org/some-model' is not a local folder, the hub \(127.0.0.1:1\) cannot be reached"):
        offline_hub_check("org/some-model", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5.0  # the 3 s timeout bounds it; a refused port answers at once


def test_unreachable_hub_but_cached_model_loads_from_the_cache(no_network, tmp_path):
    cache = _fake_cache(tmp_path, "org/cached-model")
    assert offline_hub_check("org/cached-model", cache_dir=cache) is True


def test_offline_flag_skips_the_probe(monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE must not touch the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set"):
        offline_hub_check("org/some-model", cache_dir=tmp_path)
    assert offline_hub_check("org/cached-model", cache_dir=_fake_cache(tmp_path, "org/cached-model")) is True


def test_reachable_hub_loads_normally(monkeypatch, tmp_path):
    """A listening local socket stands in for the hub (no real network)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        assert offline_hub_check("org/some-model", cache_dir=tmp_path) is False
    finally:
        srv.close()


def test_names_that_are_neither_folders_nor_hub_ids(no_network):
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and is_hub_id("gpt2")
    for bad in ("runs/x/checkpoints/step_1", "../model", "/no/such/folder", "a b"):
        assert not is_hub_id(bad)
        with pytest.raises(HubUnavailableError, match="no such local folder"):
            offline_hub_check(bad)


def test_load_model_by_unreachable_hub_id_fails_fast(monkeypatch):
    """load_model asks offline_hub_check first: an uncached hub id with the hub offline is a clear
    FileNotFoundError within seconds (transformers alone retries for ~50 s)."""
    import time

    from polab.scaled.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match="polab-no-such-org/no-such-model"):
        load_model("polab-no-such-org/no-such-model")
    assert time.monotonic() - t0 < 10.0  # generous bound for a loaded machine; the retry loop takes ~50 s
