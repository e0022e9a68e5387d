"""Fail fast when a model is named by Hugging Face hub id and the hub cannot be reached.

Without network, ``from_pretrained("org/name")`` retries for about 50 s before it reports anything.
:func:`offline_hub_check` decides in a few seconds at most: it returns at once for local folders, uses
the local Hugging Face cache when the hub is unreachable (or ``HF_HUB_OFFLINE=1``) and the model is
cached there, and otherwise raises :class:`HubUnavailableError` with what to do.

Call it before ``from_pretrained`` and pass its answer on::

    local_only = offline_hub_check(name)
    AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only)
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["HubUnavailableError", "hub_reachable", "is_hub_id", "offline_hub_check"]

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_TRUE = {"1", "true", "yes", "on"}


class HubUnavailableError(FileNotFoundError):
    """A model named by hub id is neither reachable nor in the local Hugging Face cache."""


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub id (``org/name`` or ``name``), whatever the network says."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and len(name) <= 96


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "huggingface.co", port


def hub_reachable(*, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``) opens within ``timeout`` seconds (DNS included)."""
    host, port = _endpoint()
    result = [False]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts: bound it from outside
    t.start()
    t.join(timeout)
    return result[0]


def _cached(repo_id: str, cache_dir) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache_dir) if cache_dir else None)
    return isinstance(hit, str) and os.path.isfile(hit)


def offline_hub_check(name: str, *, timeout: float = 3.0, cache_dir=None) -> bool:
    """Check, quickly, that model ``name`` can be loaded; say whether to load it from the local cache only.

    Parameters
    ----------
    name : str
        A local folder or a hub id (``org/name``). Short names polab resolves itself are not passed here.
    timeout : float
        Seconds to wait for the hub's TCP connection (name resolution included).
    cache_dir : str or Path, optional
        The Hugging Face hub cache (default: huggingface_hub's, from ``HF_HUB_CACHE``/``HF_HOME``).

    Returns
    -------
    bool
        ``True``: the hub is unreachable (or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set) and the
        model is cached: load with ``local_files_only=True``. ``False``: a local folder, or the hub is
        reachable: load normally.

    Raises
    ------
    HubUnavailableError
        ``name`` is not a local folder, and either not a hub id, or the hub is unreachable/offline and the
        model is not cached. The message names the model and the fix.
    """
    name = str(name)
    if Path(name).expanduser().is_dir():
        return False
    if not is_hub_id(name):
        raise HubUnavailableError(f"model {name!r}: no such local folder, and not a hub id (org/name); check the path.")
    offline_env = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").strip().lower() in _TRUE]
    if offline_env:
        if _cached(name, cache_dir):
            return True
        raise HubUnavailableError(f"model {name!r} is not a local folder and not in the Hugging Face cache, and {offline_env[0]} "
                                  "is set (offline): pass a local model folder, or download it where there is network.")
    if hub_reachable(timeout=timeout):
        return False
    if _cached(name, cache_dir):
        return True
    host, port = _endpoint()
    raise HubUnavailableError(
        f"model {name!r} is not a local folder, the hub ({host}:{port}) cannot be reached from this machine within "
        f"{timeout:g} s, and the model is not in the Hugging Face cache: pass a local model folder (e.g. one written by "
        "save_pretrained or `polab export`), or download the model where there is network."
    )
