"""The Hugging Face hub: reach it, or use the local cache alone and fail at once.

open_clip fetches ``hf-hub:`` models, most pretrained tags and some tokenizers (SigLIP's, the Hugging Face
text towers') from the hub. Offline, ``huggingface_hub`` retries every request for about 50 s before it
gives up. :func:`hub_or_cache` checks once per process whether the hub answers (one HEAD request with a
short timeout, through ``huggingface_hub``'s own HTTP session, so proxies apply); when it does not, or
when ``HF_HUB_OFFLINE`` is set, the block inside runs in the hub library's own offline mode: files come
from the local cache (``HF_HOME``) or fail at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from huggingface_hub import constants, get_session
except ImportError:  # optional here: without it there is no hub to reach and no offline switch to set
    constants = get_session = None

__all__ = ["hub_reachable", "hub_or_cache"]

_TIMEOUT_S = 3.0
_reachable: bool | None = None


def hub_reachable() -> bool:
    """Whether the hub answers (cached for the process); False when ``HF_HUB_OFFLINE`` is set."""
    global _reachable
    if constants is None:
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    if _reachable is None:
        try:
            get_session().head(constants.ENDPOINT, timeout=_TIMEOUT_S)  # any HTTP answer means reachable
            _reachable = True
        except Exception:  # DNS failure, refused connection, timeout, proxy error: all "unreachable"
            _reachable = False
    return _reachable


@contextlib.contextmanager
def hub_or_cache() -> Iterator[bool]:
    """Run hub downloads online if the hub answers, else from the local cache only; yields "online"."""
    if hub_reachable():
        yield True
        return
    if constants is None:
        yield False
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # the library's own switch: no request, no retry, cache only
    try:
        yield False
    finally:
        constants.HF_HUB_OFFLINE = before
