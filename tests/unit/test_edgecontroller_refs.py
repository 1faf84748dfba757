"""EdgeController reference tracking: which ConfigMaps/Secrets a pod names, and which nodes use them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloudcore.edgecontroller.refs import Change, ObjectRef, ReferenceTracker, pod_references


def cm(name: str, namespace: str = "ns") -> ObjectRef:
    return ObjectRef("configmap", namespace, name)


def secret(name: str, namespace: str = "ns") -> ObjectRef:
    return ObjectRef("secret", namespace, name)


def test_every_place_a_pod_can_name_a_configmap_or_secret() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "vol-cm"}},
                {"name": "b", "secret": {"secretName": "vol-secret", "optional": True}},
                {
                    "name": "c",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "proj-cm"}},
                            {"secret": {"name": "proj-secret"}},
                            {"serviceAccountToken": {"path": "t"}},
                        ]
                    },
                },
                {"name": "d", "emptyDir": {}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "containers": [
                {
                    "name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "C", "value": "plain"},
                        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "envFrom": [{"secretRef": {"name": "envfrom-secret"}}],
                }
            ],
            "ephemeralContainers": [{"name": "e", "envFrom": [{"configMapRef": {"name": "eph-cm"}}]}],
        },
    }
    assert pod_references(pod) == {
        cm("vol-cm"),
        cm("proj-cm"),
        cm("init-cm"),
        cm("env-cm"),
        cm("eph-cm"),
        secret("pull"),
        secret("vol-secret"),
        secret("proj-secret"),
        secret("env-secret"),
        secret("envfrom-secret"),
    }


def test_a_pod_without_references_or_with_odd_shapes_names_nothing() -> None:
    assert pod_references({"metadata": {"namespace": "ns"}}) == frozenset()
    odd = {
        "metadata": {"namespace": "ns"},
        "spec": {"volumes": [{"configMap": None}, {"secret": {}}], "imagePullSecrets": ["not-an-object"]},
    }
    assert pod_references(odd) == frozenset()


def test_the_first_pod_on_a_node_starts_a_use_and_the_last_one_ends_it() -> None:
    tracker = ReferenceTracker()
    assert tracker.set_pod("ns/p1", "n1", frozenset({cm("a")})) == [Change("n1", cm("a"), started=True)]
    assert tracker.set_pod("ns/p2", "n1", frozenset({cm("a")})) == []  # n1 already uses it
    assert tracker.set_pod("ns/p3", "n2", frozenset({cm("a")})) == [Change("n2", cm("a"), started=True)]
    assert tracker.nodes_using(cm("a")) == {"n1", "n2"}
    assert tracker.remove_pod("ns/p1") == []  # p2 still uses it on n1
    assert tracker.remove_pod("ns/p2") == [Change("n1", cm("a"), started=False)]
    assert not tracker.uses("n1", cm("a")) and tracker.uses("n2", cm("a"))
    assert tracker.remove_pod("ns/p3") == [Change("n2", cm("a"), started=False)]
    assert not tracker.used(cm("a")) and len(tracker) == 0


def test_an_update_reports_only_what_changed() -> None:
    tracker = ReferenceTracker()
    tracker.set_pod("ns/p", "n1", frozenset({cm("a"), secret("s")}))
    assert tracker.set_pod("ns/p", "n1", frozenset({cm("a"), secret("s")})) == []
    changes = tracker.set_pod("ns/p", "n1", frozenset({cm("a"), cm("b")}))
    assert sorted(changes) == sorted([Change("n1", secret("s"), started=False), Change("n1", cm("b"), started=True)])
    assert tracker.pods_on("n1") == ["ns/p"] and tracker.pods_on("n2") == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "p3", "p4"]),
            st.sampled_from(["n1", "n2"]),
            st.frozensets(st.sampled_from([cm("a"), cm("b"), secret("s")])),
        ),
        max_size=30,
    ),
    st.data(),
)
def test_counts_always_match_the_pods_recorded(
    ops: list[tuple[str, str, frozenset[ObjectRef]]], data: st.DataObject
) -> None:
    tracker = ReferenceTracker()
    pods: dict[str, tuple[str, frozenset[ObjectRef]]] = {}
    using: set[tuple[str, ObjectRef]] = set()
    for pod, node, refs in ops:
        if data.draw(st.booleans()):
            changes = tracker.remove_pod(pod)
            pods.pop(pod, None)
        else:
            changes = tracker.set_pod(pod, node, refs)
            pods[pod] = (node, refs)
        expected = {(n, r) for n, rs in pods.values() for r in rs}
        for change in changes:  # every reported change is a real transition
            assert ((change.node, change.ref) in expected) == change.started
        assert {(c.node, c.ref) for c in changes} == expected ^ using
        using = expected
        for node, ref in expected:
            assert tracker.uses(node, ref)
