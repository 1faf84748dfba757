"""Join tokens: creating, parsing and verifying `<ca-hash>.<JWT>`.

Wire shape (upstream compatible): `<hex sha256 of the CA certificate DER>.<header>.<payload>.<signature>`,
where the last three parts are an HS256 JWT (base64url without padding) whose only claim is `exp` (unix
seconds) and whose HMAC key is the CA private key's DER bytes (SEC1 for ECDSA, see `key_to_der`).
The cloud verifies the JWT (edgecore sends only that part as `Authorization: Bearer`); the edge uses the
CA hash to pin the CA certificate it fetches over an unverified connection.

The JWT codec is written here with the standard library so that nothing but HS256 is ever accepted.
No error message contains the token or any part of the JWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import reprlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .certs import KeyPair, PrivateKey, as_utc, ca_hash, format_time, key_to_der
from .errors import TokenCAMismatchError, TokenExpiredError, TokenMalformedError, TokenSignatureError

DEFAULT_TOKEN_TTL = timedelta(hours=24)
"""Upstream: 2 x tokenRefreshDuration (12 h)."""

_HEADER = {"alg": "HS256", "typ": "JWT"}
_CA_HASH = re.compile(r"[0-9a-f]{64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_EXP = 253402300799  # 9999-12-31T23:59:59Z, the last second datetime can represent
_FRESH_TOKEN = "run `keadm gettoken` on the cloud for a fresh one"
_COPY_AGAIN = f"the token was truncated or altered while copying; {_FRESH_TOKEN}"


@dataclass(frozen=True)
class ParsedToken:
    """A syntactically valid join token split into the CA hash and the JWT (kept out of repr)."""

    ca_hash: str
    jwt: str = field(repr=False)


@dataclass(frozen=True)
class _DecodedJWT:
    signing_input: bytes
    signature: bytes
    claims: dict[str, object]


def create_token(ca: KeyPair, ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None) -> str:
    """A join token for `ca` expiring `ttl` after `now` (default: the current time)."""
    if ttl <= timedelta(0):
        raise ValueError(f"token ttl must be positive, got {ttl}")
    exp = int((as_utc(now) + ttl).timestamp())
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps({"exp": exp}, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}"
    signature = _b64encode(_hs256(ca.key, signing_input.encode("ascii")))
    return f"{ca_hash(ca.cert)}.{signing_input}.{signature}"


def parse_token(token: str | bytes) -> ParsedToken:
    """Split and syntax-check a join token; surrounding whitespace is ignored.

    Raises TokenMalformedError (and nothing else, whatever the input) unless the token has 4 parts, a
    64-digit hex CA hash, base64url JWT parts, JSON-object header and payload and header alg HS256.
    """
    text = _as_text(token)
    if not text:
        raise TokenMalformedError("join token is empty: pass the output of `keadm gettoken` run on the cloud")
    parts = text.split(".")
    if len(parts) != 4:
        raise TokenMalformedError(
            f"join token has {len(parts)} dot-separated parts, expected 4 "
            f"(<ca-hash>.<header>.<payload>.<signature>): {_COPY_AGAIN}"
        )
    token_ca_hash = parts[0].lower()
    if not _CA_HASH.fullmatch(token_ca_hash):
        raise TokenMalformedError(
            f"join token does not start with the 64-digit hex sha256 of the CA certificate: {_COPY_AGAIN}"
        )
    jwt = ".".join(parts[1:])
    _decode_jwt(jwt)
    return ParsedToken(token_ca_hash, jwt)


def verify_jwt(
    jwt: str | bytes, ca: KeyPair, now: datetime | None = None, leeway: timedelta = timedelta(0)
) -> datetime:
    """Verify the JWT part of a join token (the cloud's Bearer check) and return its expiry (UTC).

    Raises TokenMalformedError, TokenSignatureError (constant-time compare) or TokenExpiredError (expired
    when `now` >= exp + `leeway`).
    """
    decoded = _decode_jwt(_as_text(jwt))
    if not hmac.compare_digest(_hs256(ca.key, decoded.signing_input), decoded.signature):
        raise TokenSignatureError(
            "join token signature does not verify against this cloud's CA key: the token was altered, or "
            f"the CA was replaced after the token was issued; {_FRESH_TOKEN}"
        )
    exp = decoded.claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int) or not 0 <= exp <= _MAX_EXP:
        raise TokenMalformedError(
            f"join token has no valid `exp` claim (integer unix seconds): it was not made by cloudcore; "
            f"{_FRESH_TOKEN}"
        )
    expires_at = datetime.fromtimestamp(exp, UTC)
    if as_utc(now) >= expires_at + leeway:
        raise TokenExpiredError(f"join token expired at {format_time(expires_at)}: {_FRESH_TOKEN}")
    return expires_at


def verify_token(
    token: str | bytes, ca: KeyPair, now: datetime | None = None, leeway: timedelta = timedelta(0)
) -> datetime:
    """Verify a whole join token against `ca`: the CA hash, then the JWT (see verify_jwt).

    Returns the expiry; raises TokenMalformedError, TokenCAMismatchError, TokenSignatureError or
    TokenExpiredError.
    """
    parsed = parse_token(token)
    own_hash = ca_hash(ca.cert)
    if not hmac.compare_digest(parsed.ca_hash, own_hash):
        raise TokenCAMismatchError(
            f"join token was issued for CA sha256 {parsed.ca_hash[:12]}..., but this cloud's CA is "
            f"{own_hash[:12]}...: the token comes from another cluster or the CA was replaced; "
            f"{_FRESH_TOKEN}"
        )
    return verify_jwt(parsed.jwt, ca, now, leeway)


def check_ca_against_token(token: str | bytes, ca_der: bytes) -> None:
    """Edge side: refuse a CA certificate (DER, as served by `/ca.crt`) whose sha256 is not the token's.

    Raises TokenMalformedError or TokenCAMismatchError.
    """
    parsed = parse_token(token)
    served_hash = ca_hash(ca_der)
    if not hmac.compare_digest(parsed.ca_hash, served_hash):
        raise TokenCAMismatchError(
            f"the CA certificate served by the cloud has sha256 {served_hash[:12]}..., but the join token "
            f"expects {parsed.ca_hash[:12]}...: the token belongs to another cloud, the CA was regenerated, "
            "or the connection is being intercepted; check the cloud address and run `keadm gettoken` on "
            "that cloud for a fresh token"
        )


def _as_text(token: object) -> str:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenMalformedError(f"join token contains non-ASCII bytes: {_COPY_AGAIN}") from None
    if not isinstance(token, str):
        raise TokenMalformedError(f"join token must be text, got {type(token).__name__}")
    return token.strip()


def _decode_jwt(jwt: str) -> _DecodedJWT:
    parts = jwt.split(".")
    if len(parts) != 3:
        raise TokenMalformedError(
            f"join token JWT has {len(parts)} dot-separated parts, expected 3 "
            f"(<header>.<payload>.<signature>): {_COPY_AGAIN}"
        )
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_b64decode(header_b64, "header"), "header")
    algorithm = header.get("alg")
    if algorithm != "HS256":
        raise TokenMalformedError(
            f"join token JWT uses algorithm {reprlib.repr(algorithm)}, expected HS256: it is not a KubeEdge "
            f"join token; {_FRESH_TOKEN}"
        )
    claims = _json_object(_b64decode(payload_b64, "payload"), "payload")
    signature = _b64decode(signature_b64, "signature")
    return _DecodedJWT(f"{header_b64}.{payload_b64}".encode("ascii"), signature, claims)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(segment: str, part: str) -> bytes:
    # Canonical unpadded base64url only: a length of 4n+1 cannot encode whole bytes, and requiring the
    # unused trailing bits to be zero (re-encoding gives the same text) makes tokens non-malleable.
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenMalformedError(f"join token {part} is not base64url: {_COPY_AGAIN}")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if _b64encode(raw) != segment:
        raise TokenMalformedError(f"join token {part} is not canonical base64url: {_COPY_AGAIN}")
    return raw


def _json_object(raw: bytes, part: str) -> dict[str, object]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        # `from None`: a JSONDecodeError keeps the decoded document, which must not reach logs.
        raise TokenMalformedError(f"join token {part} is not JSON: {_COPY_AGAIN}") from None
    if not isinstance(value, dict):
        raise TokenMalformedError(f"join token {part} is not a JSON object: {_COPY_AGAIN}")
    return value


def _hs256(key: PrivateKey, signing_input: bytes) -> bytes:
    return hmac.new(key_to_der(key), signing_input, hashlib.sha256).digest()
