"""The Application's shared wire shape (common/application.py): keys both ways, Go bytes, answers."""

from __future__ import annotations

import pytest

from common import application
from common.application import ApplicationError, Key


@pytest.mark.parametrize(("key", "text"), [
    (Key("", "v1", "pods", "default", "p"), "/core/v1/pods/default/p"),
    (Key("", "v1", "nodes", "", "n1"), "/core/v1/nodes/null/n1"),
    (Key("apps", "v1", "deployments", "dyn"), "/apps/v1/deployments/dyn"),
    (Key("apps", "v1", "deployments"), "/apps/v1/deployments"),
    (Key("", "v1", "namespaces"), "/core/v1/namespaces"),
])
def test_keys_print_as_upstream_and_parse_back(key: Key, text: str) -> None:
    assert str(key) == text and Key.parse(text) == key


def test_collections_of_a_key() -> None:
    key = Key("apps", "v1", "deployments", "dyn", "web")
    assert key.collection() == Key("apps", "v1", "deployments", "dyn")
    assert key.everywhere() == Key("apps", "v1", "deployments")


@pytest.mark.parametrize("text", ["/core/v1", "/", "/a/b/c/d/e/f", "/core//pods"])
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(ApplicationError):
        Key.parse(text)


def test_requests_and_answers_round_trip() -> None:
    asked = application.request("create", "/core/v1/configmaps/default", "edge-1", option={"dryRun": ["All"]},
                                body={"metadata": {"name": "c"}})
    assert (asked["Verb"], asked["Nodename"], asked["Status"]) == ("create", "edge-1", "InApplying")
    assert application.decode_bytes(asked["ReqBody"]) == {"metadata": {"name": "c"}}
    assert application.decode_bytes(asked["Option"]) == {"dryRun": ["All"]}
    assert application.request("get", "/core/v1/pods/default/p", "edge-1")["ReqBody"] is None

    answer = application.read_answer(application.approved(asked, {"kind": "ConfigMap"}))
    assert answer is not None and answer.approved and answer.body == {"kind": "ConfigMap"}
    refused = application.read_answer(application.rejected(asked, {"code": 409, "reason": "AlreadyExists"}))
    assert refused is not None and refused.rejected and refused.code == 409
    broken = application.read_answer(application.failed(asked, "no API server"))
    assert broken is not None and (broken.status, broken.reason, broken.code) == ("Failed", "no API server", 500)
    assert application.read_answer("not json") is None and application.read_answer({"Key": "x"}) is None
    as_text = application.read_answer('{"Status": "Approved", "RespBody": "bm90IGpzb24="}')  # body not JSON
    assert as_text is not None and as_text.approved and as_text.body is None
