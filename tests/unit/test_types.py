"""The validated types of rollbook.types and the bounded values loading of rollbook.values."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from rollbook import types
from rollbook.values import MAX_DEPTH, MAX_NODES, ValuesError, check_values, deep_merge, load_yaml

CHART = str(Path(__file__).resolve().parents[2] / "charts" / "demo-app")
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def _nested_dict(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


def repr_id(value: object) -> str:
    return types.shown(value)


def refused(kind: Any, value: object) -> str:
    with pytest.raises(ValidationError) as excinfo:
        TypeAdapter(kind).validate_python(value)
    (error,) = excinfo.value.errors(include_url=False)
    assert "\n" not in error["msg"] and len(error["msg"]) < 400, error["msg"]
    return str(error["msg"])


def accepted(kind: Any, value: object) -> Any:
    return TypeAdapter(kind).validate_python(value)


@pytest.mark.parametrize(
    ("kind", "good"),
    [
        (types.Namespace, ["default", "kube-system", "a", "a" * 63, "0ns9"]),
        (types.ResourceName, ["web", "web.v2", "a" * 253, "my-app-1"]),
        (types.ReleaseName, ["shop", "shop-green", "a" * 53, "shop.blue"]),
        (types.ImageTag, ["1.0.0", "v1.2.3-rc.1", "latest", "_x", "A" * 128]),
        (types.ImageRepository, ["nginx", "127.0.0.1:5000/rollbook/demo-app", "ghcr.io/org/app"]),
        (
            types.ImageRef,
            [
                "nginx",
                "nginx:1.27",
                "127.0.0.1:5000/rollbook/demo-app:1.0.0@sha256:" + "a" * 64,
                "ghcr.io/o/a@sha256:" + "0" * 64,
            ],
        ),
        (types.BlockName, ["prod-cluster", "a1"]),
    ],
)
def test_valid_names_pass(kind: Any, good: list[str]) -> None:
    for value in good:
        assert accepted(kind, value) == value


@pytest.mark.parametrize(
    ("kind", "bad", "words"),
    [
        (types.Namespace, "", "must not be empty"),
        (types.Namespace, "Prod", "not a valid namespace"),
        (types.Namespace, "a;rm -rf /", "not a valid namespace"),
        (types.Namespace, "-a", "not a valid namespace"),
        (types.Namespace, "a\n", "not a valid namespace"),
        (types.Namespace, "a" * 64, "at most 63 characters"),
        (types.Namespace, "a" * 10_000, "at most 63 characters, got 10000"),
        (types.Namespace, 7, "must be text"),
        (types.ResourceName, "web..v2", "not a valid Kubernetes object name"),
        (types.ResourceName, "Web", "not a valid Kubernetes object name"),
        (types.ResourceName, "a" * 254, "at most 253"),
        (types.ReleaseName, "a" * 54, "at most 53"),
        (types.ReleaseName, "Shop", "helm's rule"),
        (types.ReleaseName, "shop_green", "helm's rule"),
        (types.ImageTag, "1.0 ", "no spaces"),
        (types.ImageTag, "1.0;rm", "not a valid image tag"),
        (types.ImageTag, ".hidden", "not starting with '.'"),
        (types.ImageTag, "a" * 129, "at most 128"),
        (types.ImageRef, "nginx:1.27 ; rm -rf /", "not a valid image reference"),
        (types.ImageRef, "Nginx", "lower-case repository"),
        (types.ImageRef, "nginx@sha256:abc", "not a valid image reference"),
        (types.ImageRepository, "nginx:1.0", "no tag"),
        (types.BlockName, "Prod Cluster", "Prefect's rule"),
    ],
)
def test_invalid_names_are_refused_in_user_words(kind: Any, bad: object, words: str) -> None:
    message = refused(kind, bad)
    assert words in message
    assert "pattern" not in message  # the rule in words, not a regular expression


def test_long_values_are_cut_in_messages() -> None:
    message = refused(types.ImageRef, "x;" * 500)
    assert "(1000 characters)" in message and len(message) < 300


@pytest.mark.parametrize("bad", [True, False, "1", 1.0, 0, -1, 2**63, 10**5000, None], ids=repr_id)
def test_revision_is_strict_and_bounded(bad: object) -> None:
    message = refused(types.Revision, bad)
    assert "revision" in message


@pytest.mark.parametrize("good", [1, 2, 2**63 - 1])
def test_revision_accepts_whole_numbers(good: int) -> None:
    assert accepted(types.Revision, good) == good


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        (types.Replicas, -1),
        (types.Replicas, True),
        (types.Replicas, "3"),
        (types.Replicas, 2**31),
        (types.Millicores, -100),
        (types.Millicores, 0.5),
        (types.MemoryBytes, -1),
        (types.MemoryBytes, "1Gi"),
    ],
)
def test_quantities_are_strict_and_not_negative(kind: Any, bad: object) -> None:
    assert "must be" in refused(kind, bad)


def test_quantities_accept_zero_and_positive() -> None:
    assert accepted(types.Replicas, 0) == 0
    assert accepted(types.Millicores, 250) == 250
    assert accepted(types.MemoryBytes, 1 << 30) == 1 << 30


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "a\x00b", 3])
def test_audit_text_refuses_blanks(bad: object) -> None:
    refused(types.AuditText, bad)


def test_audit_text_is_stripped() -> None:
    assert accepted(types.AuditText, "  bad deploy  ") == "bad deploy"


def test_chart_references() -> None:
    for good in [CHART, "oci://127.0.0.1:5000/charts/demo-app", "bitnami/nginx", "https://x.example/c/app-1.0.0.tgz"]:
        assert accepted(types.ChartRef, good) == good
    assert "at most 4096" in refused(types.ChartRef, "/x" * 5000)
    assert "longer than 255" in refused(types.ChartRef, "/tmp/" + "c" * 300)
    assert "chart not found" in refused(types.ChartRef, "./no/such/chart")
    assert "chart not found" in refused(types.ChartRef, "a/b/c")
    assert "oci://" in refused(types.ChartRef, "oci://host/UPPER case")
    assert "control characters" in refused(types.ChartRef, "charts/\x00x")


def test_values_yaml_type_uses_the_bounded_loader() -> None:
    assert accepted(types.ValuesYaml, "image:\n  tag: 1.0.0\n") == "image:\n  tag: 1.0.0\n"
    assert "expands to more than" in refused(types.ValuesYaml, BILLION_LAUGHS)
    assert f"more than {MAX_DEPTH} levels" in refused(types.ValuesYaml, "a: " + "[" * 20_000 + "]" * 20_000)


def test_values_mapping_type_is_bounded() -> None:
    assert accepted(types.Values, {"image": {"tag": "1"}}) == {"image": {"tag": "1"}}
    assert f"more than {MAX_DEPTH} levels" in refused(types.Values, _nested_dict(20_000))
    assert "mapping" in refused(types.Values, ["a"])


# ------------------------------------------------------------------------------------------- rollbook.values


def test_load_yaml_reads_a_values_document_with_anchors() -> None:
    text = "defaults: &d {replicas: 2, image: {tag: '1.0'}}\nweb:\n  <<: *d\n  replicas: 3\n"
    assert load_yaml(text, field="values_yaml")["web"] == {"replicas": 3, "image": {"tag": "1.0"}}
    assert load_yaml("", field="v") == {} and load_yaml("# only a comment\n", field="v") == {}


def test_billion_laughs_is_refused_before_expansion() -> None:
    started = time.process_time()
    with pytest.raises(ValuesError, match=f"values_yaml expands to more than {MAX_NODES:,} values"):
        load_yaml(BILLION_LAUGHS, field="values_yaml")
    assert time.process_time() - started < 5  # not expanded: a billion nodes would take minutes


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 20_000 + "]" * 20_000,
        "a: " + "{a: " * 20_000 + "1" + "}" * 20_000,
        "- " * 20_000 + "x",
        "".join(" " * i + "k:\n" for i in range(200)),
    ],
)
def test_deep_documents_are_refused_without_recursion_error(text: str) -> None:
    with pytest.raises(ValuesError, match=f"values_yaml is nested more than {MAX_DEPTH} levels deep"):
        load_yaml(text, field="values_yaml")


def test_alias_chains_count_their_expanded_depth() -> None:
    chain = "k0: &k0 [1]\n" + "".join(f"k{i}: &k{i} [*k{i - 1}]\n" for i in range(1, 200))
    with pytest.raises(ValuesError, match="once its aliases are expanded"):
        load_yaml(chain, field="values_yaml")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &x [*x]\n", "refers to itself"),
        ("- 1\n- 2\n", "must be a mapping of keys to values at the top level, got a list"),
        ("just text", "got a string"),
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("a: 1\nb: : 2\n", "not valid YAML at line 2"),
        ("a: *nowhere\n", "not valid YAML"),
        ("a: " + "x" * (1 << 20), "at most 1,048,576 bytes"),
        ("1: a\n", "top-level key must be text"),
    ],
)
def test_load_yaml_refusals_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ValuesError) as excinfo:
        load_yaml(text, field="request.values_yaml")
    assert str(excinfo.value).startswith("request.values_yaml")
    assert words in str(excinfo.value)


def test_check_values_bounds_mappings() -> None:
    check_values({"a": [{"b": 1}]}, field="values")
    with pytest.raises(ValuesError, match="values is nested more than"):
        check_values(_nested_dict(20_000), field="values")
    with pytest.raises(ValuesError, match="holds more than"):
        check_values({"a": list(range(MAX_NODES + 1))}, field="values")


def test_deep_merge_is_helms_merge_and_copies() -> None:
    base = {"image": {"repository": "r", "tag": "1"}, "ports": [80], "env": {"A": "1"}}
    over = {"image": {"tag": "2"}, "ports": [8080], "env": None}
    merged = deep_merge(base, over, {"extra": {"x": 1}})
    assert merged == {"image": {"repository": "r", "tag": "2"}, "ports": [8080], "env": None, "extra": {"x": 1}}
    merged["image"]["tag"] = "changed"
    merged["ports"].append(1)
    assert base["image"]["tag"] == "1" and over["ports"] == [8080]  # inputs untouched
    assert deep_merge({"a": 1}) == {"a": 1}
