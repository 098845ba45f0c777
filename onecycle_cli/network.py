"""Whether a server answers, asked once and briefly: before a download (datasets, pretrained weights) and
before a tracker goes online (W&B), so that a box without a network says so at once instead of hanging."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit


def reach(url: str, seconds: float) -> str | None:
    """None if `url`'s server takes a TCP connection within `seconds`, else why not, in a few words.

    The connection is tried in a thread that is waited for `seconds` at most: the name lookup itself
    has no timeout and can hang for much longer than any connect timeout."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range
        return f"{url!r} names no usable port"
    answer: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            answer.append(None)
        except OSError as e:
            answer.append(f"{host} cannot be reached ({e.strerror or type(e).__name__})")
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(seconds)
    return answer[0] if answer else f"{host} did not answer within {seconds:g} s"
