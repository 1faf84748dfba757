"""klog-style lines: one line per event, verbosity gating, fields, and no secrets in the output."""

from __future__ import annotations

import io
import re

import pytest

from common import log

KLOG_LINE = re.compile(r'^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.-]+\] ".*"( \w+=".*")*$')


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    log.setup(verbosity=2, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_line_shape_module_and_fields(out: io.StringIO) -> None:
    log.get_logger("cloudhub").info("node connected", node="edge-1", msg_id="m-1")
    (line,) = lines(out)
    assert KLOG_LINE.match(line), line
    assert line.startswith("I") and ' cloudhub] "node connected" node="edge-1" msg_id="m-1"' in line


def test_severity_letters(out: io.StringIO) -> None:
    logger = log.get_logger("x")
    logger.warning("w")
    logger.error("e")
    assert [line[0] for line in lines(out)] == ["W", "E"]


def test_verbosity_gates_v_levels(out: io.StringIO) -> None:
    logger = log.get_logger("edgehub")
    logger.v(2).info("shown")
    logger.v(3).info("hidden")
    assert [line.split('] ')[1] for line in lines(out)] == ['"shown"']
    assert logger.enabled(2) and not logger.enabled(3)


def test_exception_is_one_line_with_err_field(out: io.StringIO) -> None:
    try:
        raise ValueError("bad frame\nsecond line")
    except ValueError:
        log.get_logger("m").exception("decode failed", node="n1")
    (line,) = lines(out)
    assert 'err="ValueError: bad frame\\nsecond line"' in line


def test_quotes_and_newlines_escaped(out: io.StringIO) -> None:
    log.get_logger("m").info('say "hi"\nthere', path="a\\b")
    (line,) = lines(out)
    assert '"say \\"hi\\"\\nthere" path="a\\\\b"' in line


TOKEN = ("0f" * 32) + ".eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MTgwMDAwMDB9.c2lnbmF0dXJl"


@pytest.mark.parametrize("field", ["token", "edgeHubToken", "password", "tlsPrivateKey", "Authorization"])
def test_secret_fields_are_redacted(out: io.StringIO, field: str) -> None:
    log.get_logger("m").info("config loaded", **{field: "s3cr3t-value"})
    assert "s3cr3t-value" not in out.getvalue() and "<redacted>" in out.getvalue()


def test_tokens_jwts_bearer_and_pem_keys_redacted_anywhere(out: io.StringIO) -> None:
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA\n-----END EC PRIVATE KEY-----"
    logger = log.get_logger("m")
    logger.info(f"joining with {TOKEN}")
    logger.info("request", header="Bearer abc.def.ghi")
    logger.info("key", detail=pem)
    text = out.getvalue()
    for secret in (TOKEN, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "abc.def.ghi", "MHcCAQEEIA"):
        assert secret not in text
    assert text.count("<redacted>") == 3


def test_v_flag_parses_both_spellings() -> None:
    import argparse
    parser = argparse.ArgumentParser()
    log.add_verbosity_flag(parser)
    assert parser.parse_args(["--v=4"]).v == 4
    assert parser.parse_args(["-v", "3"]).v == 3
    assert parser.parse_args([]).v == 2
