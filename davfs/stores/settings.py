"""Settings a store takes: plain values, validated by :mod:`davfs.config` and handed to
the store by the Drive, so no store reads the application's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TelegramSettings:
    """The ``davfs.telegram`` section: where chunks go and how hard to push Telegram.

    Accounts are not listed here: every session ``davfs login`` saved under
    ``<data_dir>/telegram/`` is used, so adding a bot for throughput is one login."""

    channel: str = "me"
    """``-100…`` id, ``@username``, ``https://t.me/+…`` invite link, or ``me`` (Saved Messages)."""
    api_id: int = 0
    api_hash: str = field(default="", repr=False)
    parallelism: int = 8
    """Requests in flight per account (parts of an upload, blocks of a read)."""
    flood_threshold: int = 10
    """FLOOD_WAITs up to this many seconds are slept; longer ones answer 503 + Retry-After."""
    retries: int = 5
    request_timeout: int = 120
