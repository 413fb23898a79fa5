"""Test doubles the test suite and the benchmarks share (``bench/`` does not import
``tests/``). The server never imports this package.

- :mod:`~davfs.testing.telegram_fake`: Telegram's servers simulated below a real
  telethon ``TelegramClient``, enforcing Telegram's documented rules and limits.
"""
