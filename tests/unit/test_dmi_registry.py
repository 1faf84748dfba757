"""edgecore.dmi.registry: who may register, and what a registration would displace."""

from __future__ import annotations

from edgecore.dmi.registry import MapperRecord, after, conflict_message, decide, for_protocol, socket_path, validate

A = MapperRecord("thermo", "virtual-thermometer", "/etc/kubeedge/thermo.sock")


def test_a_new_mapper_displaces_nobody() -> None:
    decision = decide({}, A)
    assert decision.displaced == [] and not decision.refresh
    assert after({}, A, decision) == {"thermo": A}


def test_the_same_name_at_the_same_address_is_a_restart() -> None:
    restarted = MapperRecord("thermo", "virtual-thermometer", A.address, version="2")
    decision = decide({"thermo": A}, restarted)
    assert decision.displaced == [] and decision.refresh
    assert after({"thermo": A}, restarted, decision) == {"thermo": restarted}


def test_the_same_name_at_another_address_would_displace_the_old_record() -> None:
    moved = MapperRecord("thermo", "virtual-thermometer", "/run/thermo.sock")
    decision = decide({"thermo": A}, moved)
    assert decision.displaced == [A] and not decision.refresh
    assert "already registered at /etc/kubeedge/thermo.sock" in conflict_message(moved, A)


def test_another_name_for_a_served_protocol_would_displace_its_mapper() -> None:
    other = MapperRecord("thermo-2", "virtual-thermometer", "/run/t2.sock")
    unrelated = MapperRecord("modbus", "modbus", "/run/modbus.sock")
    decision = decide({"thermo": A, "modbus": unrelated}, other)
    assert decision.displaced == [A]
    assert after({"thermo": A, "modbus": unrelated}, other, decision) == {"modbus": unrelated, "thermo-2": other}
    assert "already served by mapper 'thermo'" in conflict_message(other, A)
    assert for_protocol({"thermo": A, "modbus": unrelated}, "modbus") == unrelated
    assert for_protocol({"thermo": A}, "opcua") is None


def test_a_mapper_changing_its_protocol_and_address_displaces_both_holders() -> None:
    modbus = MapperRecord("modbus", "modbus", "/run/modbus.sock")
    changed = MapperRecord("thermo", "modbus", "/run/new.sock")
    assert decide({"thermo": A, "modbus": modbus}, changed).displaced == [A, modbus]


def test_a_record_at_the_requesters_own_address_is_replaced_without_a_probe() -> None:
    renamed = MapperRecord("thermometer", "virtual-thermometer", A.address)
    decision = decide({"thermo": A}, renamed)
    assert decision.displaced == [A] and decision.to_probe == []
    moved = MapperRecord("thermo", "virtual-thermometer", "/run/thermo.sock")
    assert decide({"thermo": A}, moved).to_probe == [A]


def test_bad_mapper_info_is_refused_with_the_reason() -> None:
    assert validate(A) is None
    assert "name" in (validate(MapperRecord("", "p", "/s")) or "")
    assert "name" in (validate(MapperRecord("a/b", "p", "/s")) or "")
    assert "protocol" in (validate(MapperRecord("m", "", "/s")) or "")
    assert "absolute" in (validate(MapperRecord("m", "p", "relative.sock")) or "")
    assert "107 bytes" in (validate(MapperRecord("m", "p", "/" + "x" * 107)) or "")


def test_addresses_may_carry_the_unix_scheme() -> None:
    assert socket_path("unix:///etc/kubeedge/t.sock") == "/etc/kubeedge/t.sock"
    assert socket_path("unix:/etc/kubeedge/t.sock") == "/etc/kubeedge/t.sock"
    assert socket_path(" /etc/kubeedge/t.sock ") == "/etc/kubeedge/t.sock"
