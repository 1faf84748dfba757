"""DeviceTwin's twin logic without sockets: edge updates, cloud syncs, desired values, delta, row mapping."""

from __future__ import annotations

import pytest

from edgecore.devicetwin.store import twin_of_row, twin_row
from edgecore.devicetwin.twin import (
    Twin,
    TwinError,
    apply_cloud_sync,
    apply_desired,
    apply_edge_update,
    build_delta,
    check_update,
    desired_of,
    get_result,
    to_msg,
)

NOW = 1_700_000_000_000


def test_new_twin_from_a_mapper_report() -> None:
    out = apply_edge_update({}, {"temperature": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}}}, NOW)
    twin = out.twins["temperature"]
    assert twin == Twin(actual="21.5", actual_ts=NOW, actual_version=(0, 1), optional=True, attr_type="float",
                        metadata="{}")
    assert out.result == {"temperature": {"actual": {"value": "21.5", "metadata": {"timestamp": NOW}},
                                          "optional": True, "metadata": {"type": "float"}}}
    assert out.sync["temperature"] == {"actual": {"value": "21.5", "metadata": {"timestamp": NOW}}, "optional": True,
                                       "metadata": {"type": "float"}, "actual_version": {"cloud": 0, "edge": 1}}
    assert out.document == {"temperature": {"last": None, "current": out.result["temperature"]}}
    assert out.changed == {"temperature": twin}


def test_report_on_an_existing_twin_bumps_the_edge_version_and_documents_last_state() -> None:
    before = {"setpoint": Twin(expected="42", expected_ts=1, expected_version=(2, 0), actual="40", actual_ts=1,
                               actual_version=(0, 3), optional=False, attr_type="int")}
    out = apply_edge_update(before, {"setpoint": {"actual": {"value": "41"}}}, NOW)
    assert out.twins["setpoint"].actual == "41"
    assert out.twins["setpoint"].actual_version == (0, 4)
    assert out.sync["setpoint"] == {"actual": {"value": "41", "metadata": {"timestamp": NOW}}, "optional": False,
                                    "metadata": {"type": "int"}, "actual_version": {"cloud": 0, "edge": 4}}
    assert out.result["setpoint"] == {"actual": {"value": "41", "metadata": {"timestamp": NOW}}, "optional": False,
                                      "metadata": {"type": "int"}}
    assert out.document["setpoint"]["last"] == to_msg(before["setpoint"], versions=False)
    assert out.document["setpoint"]["current"]["actual"]["value"] == "41"  # type: ignore[index]


@pytest.mark.parametrize(("kind", "value"), [("int", "4.5"), ("boolean", "yes"), ("float", "abc"), ("double", "1")])
def test_a_bad_value_rejects_the_whole_update(kind: str, value: str) -> None:
    before = {"ok": Twin(actual="1", attr_type="string")}
    with pytest.raises(TwinError) as caught:
        apply_edge_update(before, {"ok": {"actual": {"value": "2"}}, "x": {"actual": {"value": value},
                                                                            "metadata": {"type": kind}}}, NOW)
    assert caught.value.code == 400
    assert before["ok"].actual == "1"


def test_check_update_keys_and_values() -> None:
    with pytest.raises(TwinError):
        check_update({"bad key": {"actual": {"value": "1"}}})
    with pytest.raises(TwinError):
        check_update({"k": {"actual": {"value": "has space"}}})
    with pytest.raises(TwinError):
        check_update(None)
    assert check_update({"k": None}) == {"k": None}


def test_null_deletes_an_optional_twin() -> None:
    before = {"t": Twin(actual="1", actual_version=(0, 1), optional=True)}
    out = apply_edge_update(before, {"t": None}, NOW)
    assert out.twins["t"].deleted and out.twins["t"].actual is None
    assert out.result == {"t": None}
    assert out.document["t"] == {"last": to_msg(before["t"], versions=False), "current": None}
    assert get_result(out.twins) == {}
    kept = apply_edge_update({"t": Twin(actual="1", actual_version=(0, 1), optional=False)}, {"t": None}, NOW)
    assert not kept.changed


def test_delta_lists_expected_values_that_differ() -> None:
    twins = {"a": Twin(expected="42", actual="40", attr_type="int", expected_version=(1, 0)),
             "b": Twin(expected="x", actual="x"),
             "c": Twin(actual="5"),
             "d": Twin(expected="1", attr_type="deleted")}
    delta = build_delta("e", NOW, twins)
    assert delta == {"event_id": "e", "timestamp": NOW,
                     "twin": {"a": {"expected": {"value": "42"}, "actual": {"value": "40"}, "optional": True,
                                    "metadata": {"type": "int"}},
                              "b": {"expected": {"value": "x"}, "actual": {"value": "x"}, "optional": True,
                                    "metadata": {"type": "string"}}},
                     "delta": {"a": "42"}}
    assert build_delta("e", NOW, {"b": twins["b"]}) is None


def test_cloud_sync_takes_newer_versions_and_refuses_older_ones() -> None:
    before = {"sp": Twin(expected="1", expected_ts=5, expected_version=(1, 2), attr_type="int", optional=False)}
    taken = apply_cloud_sync(before, {"sp": {"expected": {"value": "7"}, "expected_version": {"cloud": 2, "edge": 2},
                                             "metadata": {"type": "int"}}}, NOW)
    assert taken.twins["sp"].expected == "7" and taken.twins["sp"].expected_version == (2, 2)
    assert taken.sync == {}
    assert taken.document["sp"]["current"]["expected"]["value"] == "7"  # type: ignore[index]
    refused = apply_cloud_sync(before, {"sp": {"expected": {"value": "9"},
                                               "expected_version": {"cloud": 2, "edge": 1}}}, NOW)
    assert refused.twins["sp"].expected == "1"
    assert refused.sync == {"sp": {"expected": {"value": "1", "metadata": {"timestamp": 5}}, "optional": False,
                                   "metadata": {"type": "int"}, "expected_version": {"cloud": 1, "edge": 2}}}
    no_version = apply_cloud_sync(before, {"sp": {"expected": {"value": "9"}}}, NOW)
    assert no_version.twins["sp"].expected == "1"


def test_desired_values_of_a_device_object() -> None:
    device = {"metadata": {"name": "thermo", "namespace": "default"},
              "spec": {"properties": [{"name": "setpoint", "desired": {"value": "42"}},
                                      {"name": "temperature"}, {"name": "empty", "desired": {"value": ""}}]}}
    assert desired_of(device) == {"setpoint": "42"}
    out = apply_desired({"setpoint": Twin(expected="40", actual="40", expected_version=(1, 3))},
                        {"setpoint": "42"}, NOW)
    assert out.twins["setpoint"].expected == "42"
    assert out.twins["setpoint"].expected_version == (2, 3)
    assert build_delta("e", NOW, out.twins)["delta"] == {"setpoint": "42"}  # type: ignore[index]
    assert not apply_desired(out.twins, {"setpoint": "42"}, NOW).changed
    fresh = apply_desired({}, {"setpoint": "1"}, NOW)
    assert fresh.twins["setpoint"] == Twin(expected="1", expected_ts=NOW, expected_version=(1, 0), optional=False)


def test_table_row_round_trip() -> None:
    twin = Twin(expected="42", expected_ts=NOW, expected_version=(1, 2), actual=None, actual_ts=None,
                actual_version=None, optional=False, attr_type="int", metadata="{}")
    row = twin_row(twin)
    assert row == ("", "42", None, f'{{"timestamp":{NOW}}}', None, '{"cloud":1,"edge":2}', None, False, "int", "{}")
    assert twin_of_row(row) == twin
