"""Everything that talks to the Hugging Face Hub (the only module importing huggingface_hub).

This part fetches pretrained timm encoder weights: the local Hub cache first (so it
works offline once fetched), then one quick reachability probe of the endpoint, then
the download. Without a network the error comes within seconds and says how to
supply the weights as a local file instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import DraemZooError

TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def endpoint_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub endpoint (skipped, i.e. True, behind a proxy)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    url = urlparse(endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_timm_weights(repo_id: str, model_name: str, key: str) -> Path:
    """A local path to the pretrained weights of a timm model hosted on the Hub."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for filename in TIMM_WEIGHT_FILES:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    advice = (f"Offline, fetch them on a machine with internet (timm.create_model({model_name!r}, "
              "pretrained=True), then save its state_dict with safetensors) and pass "
              f"{key.replace('encoder', 'pretrained_file')}=PATH, or set model.pretrained=false.")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not endpoint_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"{endpoint()} cannot be reached"
        raise DraemZooError(f"{key}={model_name!r}: pretrained weights are not in the local Hub cache and {why}. "
                            + advice)
    errors = []
    for filename in TIMM_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as exc:  # missing file variant, network trouble
            errors.append(f"{filename}: {type(exc).__name__}")
    raise DraemZooError(f"{key}={model_name!r}: pretrained weights could not be downloaded from {repo_id} "
                        f"({'; '.join(errors)}). " + advice)
