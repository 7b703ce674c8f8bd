"""The error a user's setting raises: ``ConfigError`` (also importable from :mod:`dlp_lib.config`)."""


class ConfigError(ValueError):
    """A setting that cannot work; the message says what to do instead."""
