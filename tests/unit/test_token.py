"""common.pki.token: join token wire shape, verification, malformed input and error hygiene."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from common.pki import (
    DEFAULT_TOKEN_TTL,
    KeyPair,
    TokenCAMismatchError,
    TokenError,
    TokenExpiredError,
    TokenMalformedError,
    TokenSignatureError,
    ca_hash,
    cert_to_der,
    check_ca_against_token,
    create_token,
    parse_token,
    verify_jwt,
    verify_token,
)

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
B64URL_ALPHABET = string.ascii_letters + string.digits + "-_"


@pytest.fixture(scope="module")
def token(ca: KeyPair) -> str:
    return create_token(ca, now=NOW)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _sec1_der(ca: KeyPair) -> bytes:
    return ca.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _forge(ca: KeyPair, header: object, claims: object) -> str:
    """A token built and signed here, independently of common.pki.token."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(_sec1_der(ca), signing_input.encode(), hashlib.sha256).digest()
    return f"{ca_hash(ca.cert)}.{signing_input}.{_b64(signature)}"


def _replace_part(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


# --- wire shape ------------------------------------------------------------------------------------


def test_wire_shape_and_independent_hmac_check(ca: KeyPair, token: str) -> None:
    parts = token.split(".")
    assert len(parts) == 4
    assert parts[0] == hashlib.sha256(cert_to_der(ca.cert)).hexdigest()
    assert all(set(part) <= set(B64URL_ALPHABET) for part in parts[1:])  # unpadded base64url
    assert json.loads(_unb64(parts[1])) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(_unb64(parts[2])) == {"exp": int((NOW + timedelta(hours=24)).timestamp())}
    expected = hmac.new(_sec1_der(ca), f"{parts[1]}.{parts[2]}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(_unb64(parts[3]), expected)


def test_forged_token_with_the_ca_key_verifies(ca: KeyPair) -> None:
    exp = int((NOW + timedelta(hours=1)).timestamp())
    forged = _forge(ca, {"alg": "HS256", "typ": "JWT"}, {"exp": exp})
    assert verify_token(forged, ca, now=NOW) == datetime.fromtimestamp(exp, UTC)


# --- verification ----------------------------------------------------------------------------------


def test_create_and_verify(ca: KeyPair, token: str) -> None:
    assert timedelta(hours=24) == DEFAULT_TOKEN_TTL
    assert verify_token(token, ca, now=NOW) == NOW + timedelta(hours=24)
    assert verify_token(token, ca, now=NOW + timedelta(hours=23, minutes=59)) == NOW + timedelta(hours=24)
    assert verify_jwt(parse_token(token).jwt, ca, now=NOW) == NOW + timedelta(hours=24)


def test_parse_tolerates_whitespace_bytes_and_uppercase_hash(ca: KeyPair, token: str) -> None:
    parsed = parse_token(token)
    assert parsed.ca_hash == ca_hash(ca.cert)
    assert parsed.jwt == token.split(".", 1)[1]
    assert parse_token(f"  {token}\n") == parsed
    assert parse_token(token.encode()) == parsed
    hash_part, jwt = token.split(".", 1)
    assert parse_token(f"{hash_part.upper()}.{jwt}") == parsed


def test_default_clock_is_now(ca: KeyPair) -> None:
    expiry = verify_token(create_token(ca, ttl=timedelta(minutes=5)), ca)
    assert timedelta(minutes=4) < expiry - datetime.now(UTC) <= timedelta(minutes=5)


def test_expired(ca: KeyPair, token: str) -> None:
    expiry = NOW + timedelta(hours=24)
    with pytest.raises(TokenExpiredError) as info:
        verify_token(token, ca, now=expiry)
    assert str(info.value) == (
        "join token expired at 2026-11-25T10:00:00Z: run `keadm gettoken` on the cloud for a fresh one"
    )
    with pytest.raises(TokenExpiredError):
        verify_jwt(parse_token(token).jwt, ca, now=expiry + timedelta(days=1))


def test_leeway(ca: KeyPair, token: str) -> None:
    late = NOW + timedelta(hours=24, seconds=30)
    verify_token(token, ca, now=late, leeway=timedelta(minutes=1))
    with pytest.raises(TokenExpiredError):
        verify_token(token, ca, now=late, leeway=timedelta(seconds=10))


def test_naive_now_is_utc(ca: KeyPair, token: str) -> None:
    with pytest.raises(TokenExpiredError):
        verify_token(token, ca, now=(NOW + timedelta(hours=25)).replace(tzinfo=None))


def test_tampered_signature(ca: KeyPair, token: str) -> None:
    signature = bytearray(_unb64(token.split(".")[3]))
    signature[5] ^= 0xFF
    with pytest.raises(TokenSignatureError, match="does not verify"):
        verify_token(_replace_part(token, 3, _b64(bytes(signature))), ca, now=NOW)


def test_non_canonical_base64_is_rejected(ca: KeyPair, token: str) -> None:
    signature = token.split(".")[3]
    assert len(signature) == 43  # 32 bytes: the last character carries 4 unused bits
    last = B64URL_ALPHABET[(B64URL_ALPHABET.index(signature[-1]) + 1) % 64]
    with pytest.raises(TokenMalformedError, match="not canonical base64url"):
        verify_token(_replace_part(token, 3, signature[:-1] + last), ca, now=NOW)


def test_tampered_payload(ca: KeyPair, token: str) -> None:
    forever = _b64(json.dumps({"exp": 4102444800}).encode())
    with pytest.raises(TokenSignatureError):
        verify_token(_replace_part(token, 2, forever), ca, now=NOW)


def test_token_of_another_ca(ca: KeyPair, other_ca: KeyPair, token: str) -> None:
    with pytest.raises(TokenCAMismatchError, match="issued for CA sha256") as info:
        verify_token(token, other_ca, now=NOW)
    assert ca_hash(ca.cert)[:12] in str(info.value)
    assert ca_hash(other_ca.cert)[:12] in str(info.value)
    # The right hash in front of a JWT signed with another CA's key still fails on the signature.
    spliced = f"{ca_hash(other_ca.cert)}.{parse_token(token).jwt}"
    with pytest.raises(TokenSignatureError):
        verify_token(spliced, other_ca, now=NOW)
    with pytest.raises(TokenSignatureError):
        verify_jwt(parse_token(token).jwt, other_ca, now=NOW)


def test_ttl_must_be_positive(ca: KeyPair) -> None:
    with pytest.raises(ValueError, match="positive"):
        create_token(ca, ttl=timedelta(0))


# --- malformed -------------------------------------------------------------------------------------

HEADER = {"alg": "HS256", "typ": "JWT"}
EXP = int((NOW + timedelta(hours=1)).timestamp())

MALFORMED: dict[str, Callable[[KeyPair, str], str]] = {
    "three parts": lambda ca, token: token.split(".", 1)[1],
    "five parts": lambda ca, token: f"{token}.AAAA",
    "empty": lambda ca, token: " \n",
    "non-hex hash": lambda ca, token: _replace_part(token, 0, "g" * 64),
    "short hash": lambda ca, token: _replace_part(token, 0, "ab" * 16),
    "bad base64 header": lambda ca, token: _replace_part(token, 1, "!!!!"),
    "impossible base64 length": lambda ca, token: _replace_part(token, 2, "A" * 5),
    "padded base64": lambda ca, token: _replace_part(token, 2, token.split(".")[2] + "=="),
    "header not json": lambda ca, token: _replace_part(token, 1, _b64(b"{not json")),
    "header not utf-8": lambda ca, token: _replace_part(token, 1, _b64(b"\xff\xfe")),
    "header not an object": lambda ca, token: _replace_part(token, 1, _b64(b'["HS256"]')),
    "payload not an object": lambda ca, token: _replace_part(token, 2, _b64(b"42")),
    "deeply nested payload": lambda ca, token: _replace_part(token, 2, _b64(b"[" * 100_000)),
    "alg none": lambda ca, token: _replace_part(
        _replace_part(token, 1, _b64(b'{"alg":"none","typ":"JWT"}')), 3, ""
    ),
    "alg missing": lambda ca, token: _forge(ca, {"typ": "JWT"}, {"exp": EXP}),
    "alg HS512": lambda ca, token: _forge(ca, {"alg": "HS512"}, {"exp": EXP}),
    "alg RS256": lambda ca, token: _forge(ca, {"alg": "RS256"}, {"exp": EXP}),
    "missing exp": lambda ca, token: _forge(ca, HEADER, {}),
    "exp string": lambda ca, token: _forge(ca, HEADER, {"exp": str(EXP)}),
    "exp float": lambda ca, token: _forge(ca, HEADER, {"exp": EXP + 0.5}),
    "exp bool": lambda ca, token: _forge(ca, HEADER, {"exp": True}),
    "exp negative": lambda ca, token: _forge(ca, HEADER, {"exp": -1}),
    "exp too large": lambda ca, token: _forge(ca, HEADER, {"exp": 10**30}),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(ca: KeyPair, token: str, make: Callable[[KeyPair, str], str]) -> None:
    bad = make(ca, token)
    with pytest.raises(TokenMalformedError) as info:
        verify_token(bad, ca, now=NOW)
    _assert_clean(str(info.value), bad)
    _assert_clean(str(info.value), token)


def test_alg_none_is_rejected_by_parse(token: str) -> None:
    unsigned = _replace_part(_replace_part(token, 1, _b64(b'{"alg":"none"}')), 3, "")
    with pytest.raises(TokenMalformedError, match="expected HS256"):
        parse_token(unsigned)


def test_non_text_is_malformed() -> None:
    with pytest.raises(TokenMalformedError, match="non-ASCII"):
        parse_token("é".encode())
    with pytest.raises(TokenMalformedError, match="must be text"):
        parse_token(42)  # type: ignore[arg-type]


# --- edge-side CA pinning --------------------------------------------------------------------------


def test_check_ca_against_token(ca: KeyPair, other_ca: KeyPair, token: str) -> None:
    check_ca_against_token(token, cert_to_der(ca.cert))
    with pytest.raises(TokenCAMismatchError, match="served by the cloud") as info:
        check_ca_against_token(token, cert_to_der(other_ca.cert))
    assert ca_hash(ca.cert)[:12] in str(info.value)
    assert ca_hash(other_ca.cert)[:12] in str(info.value)
    _assert_clean(str(info.value), token)
    with pytest.raises(TokenMalformedError):
        check_ca_against_token("nonsense", cert_to_der(ca.cert))


# --- error hygiene ---------------------------------------------------------------------------------


def _assert_clean(message: str, token: str) -> None:
    assert not token or token not in message
    for part in token.split(".")[1:]:
        assert len(part) < 8 or part not in message, "a JWT part leaked into an error message"
    assert "keadm gettoken" in message or "must be text" in message


def test_error_messages_never_contain_the_token(ca: KeyPair, other_ca: KeyPair, token: str) -> None:
    failures: list[Callable[[], object]] = [
        lambda: verify_token(token, ca, now=NOW + timedelta(days=2)),
        lambda: verify_token(token, other_ca, now=NOW),
        lambda: check_ca_against_token(token, cert_to_der(other_ca.cert)),
        lambda: verify_jwt(parse_token(token).jwt, other_ca, now=NOW),
    ]
    for call in failures:
        with pytest.raises(TokenError) as info:
            call()
        _assert_clean(str(info.value), token)
        assert info.value.__cause__ is None


def test_parsed_token_repr_hides_the_jwt(token: str) -> None:
    parsed = parse_token(token)
    assert parsed.jwt not in repr(parsed)
    assert parsed.ca_hash in repr(parsed)


# --- properties ------------------------------------------------------------------------------------

_segment = st.text(alphabet=B64URL_ALPHABET + "=.!", max_size=40)
_json_segment = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
).map(lambda value: _b64(json.dumps(value).encode()))
_token_like = st.builds(
    lambda parts: ".".join(parts),
    st.lists(
        st.one_of(_segment, _json_segment, st.just("a" * 64), st.just(_b64(b'{"alg":"HS256"}'))),
        min_size=1,
        max_size=6,
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.binary(), _token_like, _token_like.map(str.encode)))
def test_parse_token_only_raises_malformed(data: str | bytes) -> None:
    with contextlib.suppress(TokenMalformedError):
        parse_token(data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _token_like))
def test_verify_token_only_raises_token_errors(ca: KeyPair, data: str) -> None:
    with contextlib.suppress(TokenError):
        verify_token(data, ca, now=NOW)
