"""Hugging Face hub access, checked before any work starts.

Nothing is downloaded unless a source names the hub (a hub model id, ``c4``, ``wikitext2``, the
``hub`` zero-shot source) or a run of a model other than the embedded one is given no data (it then
reads ``c4`` and ``wikitext2``, as the papers). When one does and the hub cannot be reached, the run is
refused at once with what to do, instead of failing after a minute of retries (or after the pruning,
for data).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

from .config import ConfigError

TIMEOUT_SECONDS = 5.0
_TRUE = ("1", "true", "yes", "on")
DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` (a mirror) or huggingface.co. One that is not an http(s) URL with
    a host is a ConfigError: the hub libraries would fail on it with a traceback, or not at all until later."""
    value = os.environ.get("HF_ENDPOINT", "") or DEFAULT_ENDPOINT  # as huggingface_hub reads it
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(
            f"HF_ENDPOINT={value!r} is not an http(s) URL; set it to the hub or a mirror of it, such as "
            f"{DEFAULT_ENDPOINT} or https://hf-mirror.com, or unset it"
        )
    return value.rstrip("/")


def offline_variables(datasets: bool = False) -> list[str]:
    """The variables that put the hub libraries in offline mode, of those set (HF_HUB_OFFLINE,
    TRANSFORMERS_OFFLINE; for data sets also HF_DATASETS_OFFLINE)."""
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"] + (["HF_DATASETS_OFFLINE"] if datasets else [])
    return [name for name in names if os.environ.get(name, "").strip().lower() in _TRUE]


def offline(datasets: bool = False) -> bool:
    """Whether the user put the hub libraries in offline mode (HF_HUB_OFFLINE; for data sets also
    HF_DATASETS_OFFLINE): they then read only their local caches."""
    return bool(offline_variables(datasets))


def unreachable(timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None if the hub answers (any HTTP status counts: the network works), else why not."""
    request = urllib.request.Request(endpoint(), method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: http.client's InvalidURL
        reason = getattr(err, "reason", err)
        return " ".join(str(reason).split()) or type(err).__name__
    return None


def model_in_cache(repo_id: str) -> bool:
    """Whether the hub cache (HF_HOME) already holds ``repo_id``'s config."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_model(repo_id: str) -> None:
    """Refuse a hub model that is neither in the local hub cache nor downloadable now (and, online, a bad
    HF_ENDPOINT: transformers asks the hub about a cached model too)."""
    if not offline():
        endpoint()
    if model_in_cache(repo_id):
        return
    if offline():
        raise ConfigError(
            f"model {repo_id!r} is not in the local hub cache and offline mode (HF_HUB_OFFLINE) forbids downloading "
            "it; unset HF_HUB_OFFLINE, or give a local model directory"
        )
    reason = unreachable()
    if reason is not None:
        raise ConfigError(
            f"cannot reach the Hugging Face hub ({endpoint()}: {reason}) to download model {repo_id!r}, and it is "
            "not in the local hub cache; connect (or set HF_ENDPOINT to a mirror), or give a local model directory "
            "or the embedded smollm2-135m"
        )


def check_dataset(source: str, instead: str) -> None:
    """Refuse a hub data source (``c4``, ``wikitext2``, lm-eval's hub tasks) when the hub cannot be
    reached; ``instead`` says what to use. In offline mode the data sets library reads its own cache,
    so nothing is checked."""
    if offline(datasets=True):
        return
    reason = unreachable()
    if reason is not None:
        raise ConfigError(
            f"cannot reach the Hugging Face hub ({endpoint()}: {reason}) to download {source}; {instead}, or set "
            "HF_DATASETS_OFFLINE=1 if your data sets cache holds it"
        )
