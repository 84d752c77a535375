"""What the configuration classes share: positive-number checks and URL redaction."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import ConfigError

_REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and ``repr``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{_REDACTED}@{netloc[-1]}"))


def _positive(name: str, value: float) -> None:
    if not value > 0:  # NaN too
        raise ConfigError(f"{name} must be greater than 0, got {value!r}")
