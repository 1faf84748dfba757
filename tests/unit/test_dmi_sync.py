"""edgecore.dmi.catalog and sync: which calls a mapper gets, in which order, and that changes coalesce."""

from __future__ import annotations

from typing import Any

from edgecore.dmi.catalog import DEVICE, MODEL, Catalog, digest_of, key_from_resource
from edgecore.dmi.sync import (
    CREATE_MODEL,
    REGISTER_DEVICE,
    REMOVE_DEVICE,
    REMOVE_MODEL,
    UPDATE_DEVICE,
    UPDATE_MODEL,
    MapperSync,
    Push,
    action,
)

P = "virtual-thermometer"


def device(name: str, protocol: str = P, model: str = "m", desired: str = "30", ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {"deviceModelRef": {"name": model}, "protocol": {"protocolName": protocol},
                     "properties": [{"name": "threshold", "desired": {"value": desired}}]}}


def model(name: str = "m", unit: str = "degC") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"properties": [{"name": "t", "unit": unit}]}}


def drain(sync: MapperSync, catalog: Catalog) -> list[tuple[str, str]]:
    """Every call the mapper of P gets until it is up to date (each succeeding)."""
    calls = []
    while (push := sync.next(catalog.view(P))) is not None:
        calls.append((push.rpc, push.key[1]))
        sync.done(push)
        assert len(calls) < 100
    return calls


def test_action_for_each_gap() -> None:
    assert action((DEVICE, "d"), "x", None) == REGISTER_DEVICE
    assert action((DEVICE, "d"), "y", "x") == UPDATE_DEVICE
    assert action((DEVICE, "d"), None, "x") == REMOVE_DEVICE
    assert action((MODEL, "m"), "x", None) == CREATE_MODEL
    assert action((MODEL, "m"), "y", "x") == UPDATE_MODEL
    assert action((MODEL, "m"), None, "x") == REMOVE_MODEL
    assert action((DEVICE, "d"), "x", "x") is None and action((DEVICE, "d"), None, None) is None


def test_a_mapper_sees_its_protocols_devices_and_only_the_models_they_use() -> None:
    catalog = Catalog()
    catalog.put((MODEL, "default/m"), model())
    catalog.put((MODEL, "default/unused"), model("unused"))
    catalog.put((DEVICE, "default/d1"), device("d1"))
    catalog.put((DEVICE, "default/other"), device("other", protocol="modbus", model="missing"))
    assert set(catalog.view(P)) == {(MODEL, "default/m"), (DEVICE, "default/d1")}
    assert set(catalog.view("modbus")) == {(DEVICE, "default/other")}  # its model does not exist (yet)


def test_models_go_before_the_devices_that_need_them_and_are_removed_after() -> None:
    catalog, sync = Catalog(), MapperSync()
    for key, obj in (((DEVICE, "default/d1"), device("d1")), ((MODEL, "default/m"), model())):
        catalog.put(key, obj)  # the device arrives first
        sync.mark(key)
    assert drain(sync, catalog) == [(CREATE_MODEL, "default/m"), (REGISTER_DEVICE, "default/d1")]
    catalog.remove((MODEL, "default/m"))
    catalog.remove((DEVICE, "default/d1"))
    sync.mark((MODEL, "default/m"))
    sync.mark((DEVICE, "default/d1"))
    assert drain(sync, catalog) == [(REMOVE_DEVICE, "default/d1"), (REMOVE_MODEL, "default/m")]
    assert sync.sent == {} and sync.idle


def test_changes_of_one_key_collapse_into_one_call_with_the_latest_object() -> None:
    catalog, sync = Catalog(), MapperSync()
    catalog.put((MODEL, "default/m"), model())
    catalog.put((DEVICE, "default/d1"), device("d1"))
    sync.reset(catalog.view(P))  # the mapper registered and holds both
    for desired in ("31", "32", "33"):
        _, changed = catalog.put((DEVICE, "default/d1"), device("d1", desired=desired))
        assert changed
        sync.mark((DEVICE, "default/d1"))
    push = sync.next(catalog.view(P))
    assert push == Push(UPDATE_DEVICE, (DEVICE, "default/d1"), digest_of(device("d1", desired="33")))
    sync.done(push)
    assert sync.next(catalog.view(P)) is None


def test_status_and_resource_version_changes_are_not_pushed() -> None:
    catalog = Catalog()
    catalog.put((DEVICE, "default/d1"), device("d1"))
    newer = {**device("d1"), "status": {"twins": [{"propertyName": "threshold", "reported": {"value": "30"}}]}}
    newer["metadata"] = {**newer["metadata"], "resourceVersion": "2"}
    assert catalog.put((DEVICE, "default/d1"), newer)[1] is False
    assert catalog.put((DEVICE, "default/d1"), device("d1", desired="35"))[1] is True


def test_a_device_moving_to_another_protocol_is_removed_here() -> None:
    catalog, sync = Catalog(), MapperSync()
    catalog.put((MODEL, "default/m"), model())
    catalog.put((DEVICE, "default/d1"), device("d1"))
    sync.reset(catalog.view(P))
    catalog.put((DEVICE, "default/d1"), device("d1", protocol="modbus"))
    sync.mark((DEVICE, "default/d1"))
    sync.mark((MODEL, "default/m"))
    assert drain(sync, catalog) == [(REMOVE_DEVICE, "default/d1"), (REMOVE_MODEL, "default/m")]


def test_a_refused_call_is_dropped_until_the_key_changes_again() -> None:
    catalog, sync = Catalog(), MapperSync()
    catalog.put((DEVICE, "default/d1"), device("d1"))
    sync.mark((DEVICE, "default/d1"))
    push = sync.next(catalog.view(P))
    assert push is not None
    sync.drop(push)
    assert sync.next(catalog.view(P)) is None
    sync.mark((DEVICE, "default/d1"))
    assert sync.next(catalog.view(P)) == push  # still not registered: tried again on the next change


def test_past_the_limit_the_dirty_set_becomes_one_full_comparison() -> None:
    catalog, sync = Catalog(), MapperSync(limit=2)
    for i in range(5):
        catalog.put((DEVICE, f"default/d{i}"), device(f"d{i}"))
        sync.mark((DEVICE, f"default/d{i}"))
    assert sync.resync and len(sync.dirty) == 0
    sync.sent[(DEVICE, "default/gone")] = "x"  # something the mapper holds that no longer exists
    calls = drain(sync, catalog)
    assert sorted(calls) == sorted([(REMOVE_DEVICE, "default/gone")] +
                                   [(REGISTER_DEVICE, f"default/d{i}") for i in range(5)])
    assert calls[0] == (REMOVE_DEVICE, "default/gone")
    sync.mark((DEVICE, "default/d0"))
    assert sync.drop_all() == 1 and sync.idle


def test_keys_come_from_metadata_or_else_the_resource() -> None:
    assert key_from_resource(DEVICE, "ns/device/d", {"metadata": {"name": "d", "namespace": "ns"}}) == (DEVICE,
                                                                                                          "ns/d")
    assert key_from_resource(DEVICE, "node/n1/ns/device/d", None) == (DEVICE, "ns/d")
    assert key_from_resource(MODEL, "ns/devicemodel/m", {}) == (MODEL, "ns/m")
    assert key_from_resource(DEVICE, "bogus", None) is None
