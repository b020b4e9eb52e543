"""Domain exceptions. Messages name what failed and where, never a secret."""

from __future__ import annotations


class EtlError(Exception):
    """Base class of every error this pipeline raises on purpose."""


class ConfigError(EtlError):
    """The configuration is missing or invalid: permanent, no retry can fix it. The message
    starts with the setting to fix (``WAREHOUSE_URL: ...``) and says what to do."""


class SourceError(EtlError):
    """The sales API could not deliver a day."""


class PermanentSourceError(SourceError):
    """The sales API answered with an error that retrying cannot fix (4xx, broken contract).

    ``status`` is the HTTP status when the error is an answer of the server, else None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientSourceError(SourceError):
    """The sales API kept failing with transient errors until the retries ran out."""


class PartialExtractError(TransientSourceError):
    """The source failed after part of the day had arrived: a fresh extract that partly
    succeeded, so an older snapshot in the lake must not stand in for it."""


class LakeError(EtlError):
    """The data lake could not be read or written."""


class WarehouseError(EtlError):
    """The warehouse load failed."""


class SchemaContractError(EtlError):
    """The source changed the shape of its records (a field added, missing or retyped) and
    ``SCHEMA_CONTRACT=freeze`` forbids it: permanent, the day fails before anything is loaded."""


class QualityError(EtlError):
    """A loaded day's reject rate is above the hard limit: the run fails after the load."""


def is_permanent(exc: BaseException) -> bool:
    """True for the errors no retry can fix: configuration, a 4xx or broken contract of the
    source, a frozen schema contract broken, a day over the quality limit (see docs/errors.md)."""
    return isinstance(exc, ConfigError | PermanentSourceError | SchemaContractError | QualityError)
