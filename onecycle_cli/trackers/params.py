"""A run's config.yaml as tracker parameters: one per key the run read, as `--set` names it, nothing secret.

Only what the run recorded is sent, never the environment (where API keys and tokens live). A value
that could still carry a secret (a URL with a user and password, a token in its query, a key whose name
says it holds one) is sent as "[redacted]" in that part.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config.reads import flatten, unread
from ..runs.history import commands_of, read_config, read_json

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"(token|secret|password|passwd|api_?key|credential|auth)", re.IGNORECASE)
URL_USER = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
SECRET_QUERY = re.compile(r"(?P<key>[?&][^=&#\s]*(?:token|secret|password|sig|key|auth)[^=&#\s]*=)[^&#\s]*",
                          re.IGNORECASE)
VALUE_LIMIT = 500  # MLflow's limit on a parameter's value before 2.x, and more than any config value needs


def redact(text: str) -> str:
    """A string with the secrets a URL may carry replaced: user:password@, ?token=..."""
    return SECRET_QUERY.sub(lambda m: m.group("key") + REDACTED, URL_USER.sub(lambda m: m.group("scheme") + REDACTED
                                                                              + "@", text))


def as_text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = redact(text)
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT - 1] + "…"


def run_params(run: Path) -> dict[str, str]:
    """{"schedule.max_lr": "0.05", ...}: every key of the run's config.yaml that its command read."""
    config = read_config(run)
    if not config:
        return {}
    flat = flatten(config)
    ignored = unread(flat, commands_of(read_json(run / "summary.json"), read_json(run / "meta.json")))
    return {key: REDACTED if SECRET_NAME.search(key) else as_text(value)
            for key, value in flat.items() if key not in ignored}
