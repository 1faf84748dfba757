"""The project's exception hierarchy for messaging: one base class so callers can catch what we raise.

Config (common.config) and PKI (common.pki) keep their own hierarchies next to their code.
"""

from __future__ import annotations


class KubeEdgeError(Exception):
    """Base of every messaging error raised by kubeedge-py."""


class MessageDecodeError(KubeEdgeError, ValueError):
    """Bytes that are not a beehive message; the text names the offending field."""


class ResourceError(KubeEdgeError, ValueError):
    """A resource string that does not have the expected shape."""


class BusError(KubeEdgeError):
    """Base of module-bus failures."""


class UnknownModuleError(BusError, LookupError):
    """A message was addressed to a module or group nobody registered."""


class BusFullError(BusError):
    """A module's mailbox stayed full past the send timeout; the message was not enqueued."""


class BusClosedError(BusError):
    """The bus was closed: no more messages flow."""


class DuplicateModuleError(BusError):
    """Two modules tried to register under one name."""
