"""The PKI exception hierarchy: everything common.pki raises on bad certificates, CSRs, keys and tokens.

Every message names the cause and the fix. No message ever contains a token, a JWT or key material;
CA hashes (sha256 of the public CA certificate) may appear because they are public.
"""

from __future__ import annotations


class PKIError(Exception):
    """Base of every error raised by common.pki."""


class KeyMaterialError(PKIError):
    """A private key that cannot be loaded or is of an unsupported type."""


class CSRError(PKIError):
    """A certificate signing request (or its requested usages) that the CA refuses to sign."""


class CertificateError(PKIError):
    """A certificate that cannot be parsed, is outside its validity window, was not issued by the
    expected CA, or is not valid for the requested usage."""


class TokenError(PKIError):
    """Base of join-token failures."""


class TokenMalformedError(TokenError, ValueError):
    """Text that does not have the shape of a join token (`<ca-sha256-hex>.<header>.<payload>.<sig>`)."""


class TokenExpiredError(TokenError):
    """A join token whose `exp` claim is in the past."""


class TokenSignatureError(TokenError):
    """A join token whose HS256 signature does not verify against this CA's key."""


class TokenCAMismatchError(TokenError):
    """A join token bound to a different CA certificate than the one at hand."""
