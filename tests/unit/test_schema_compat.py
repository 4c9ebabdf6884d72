"""The schema declaration's format and the guard's verdicts (rollbook.schema_compat), pure."""

from __future__ import annotations

import pytest

from rollbook.schema_compat import (
    ANNOTATION,
    DeclarationInvalid,
    SchemaState,
    declaration_of_template,
    declarations_of_manifest,
    judge,
    judge_release,
    parse_declaration,
    resolve_revisions,
    version_key,
)
from tasks.migrations.base import version_key as provider_version_key

# a1 -> b2 -> c3 -> d4, and a branch b2 -> x9
GRAPH = {"a1": (), "b2": ("a1",), "c3": ("b2",), "d4": ("c3",), "x9": ("b2",)}


def _state(kind: str, *current: str, **extra: object) -> SchemaState:
    return SchemaState(kind=kind, current=tuple(current), **extra)  # type: ignore[arg-type]


def test_version_key_orders_numbers_not_text_and_is_shared_with_the_providers() -> None:
    assert provider_version_key is version_key
    assert version_key("1.2") == version_key("1.2.0") < version_key("1.10")
    assert version_key("9") < version_key("10")
    assert version_key("1_2_1") == version_key("1.2.1")
    assert version_key("20240101120000") > version_key("20231231235959")
    with pytest.raises(ValueError):
        version_key("1.x")


@pytest.mark.parametrize(
    ("raw", "low", "high"),
    [("3..7", "3", "7"), ("3..", "3", None), ("..7", None, "7"), (" 1.2 .. 1.10 ", "1.2", "1.10"), ("5", "5", "5")],
)
def test_ordered_ranges_parse_with_open_ends(raw: str, low: str | None, high: str | None) -> None:
    parsed = parse_declaration(raw, kind="flyway")
    assert (parsed.low, parsed.high, parsed.revisions) == (low, high, ())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("..", "at least one end"),
        ("7..3", "above the upper end"),
        ("1.10..1.9", "above the upper end"),
        ("v3..7", "'v3' is not a version"),
        ("3..7..9", "is not a version"),
        ("3,4", "is not a version"),
        ("1" * 1001, "longer than"),
    ],
)
def test_bad_ordered_declarations_are_refused_with_the_reason(raw: str, message: str) -> None:
    with pytest.raises(DeclarationInvalid, match=message):
        parse_declaration(raw, kind="golang-migrate")


def test_alembic_lists_and_ranges() -> None:
    assert parse_declaration("c3, d4,c3", kind="alembic").revisions == ("c3", "d4")
    assert parse_declaration("b2..d4", kind="alembic").is_range
    with pytest.raises(DeclarationInvalid, match="not a revision id"):
        parse_declaration("c3;drop", kind="alembic")
    with pytest.raises(DeclarationInvalid, match="not a revision id"):
        parse_declaration("c3,,d4", kind="alembic")


def test_alembic_ranges_resolve_against_the_graph() -> None:
    def covered(raw: str) -> set[str]:
        return resolve_revisions(parse_declaration(raw, kind="alembic"), GRAPH)

    assert covered("b2..d4") == {"b2", "c3", "d4"}
    assert covered("c3..") == {"c3", "d4"}
    assert covered("..b2") == {"a1", "b2"}
    assert covered("b2..") == {"b2", "c3", "d4", "x9"}
    assert covered("c3..c3") == {"c3"}
    with pytest.raises(DeclarationInvalid, match="not an ancestor"):
        covered("x9..d4")
    with pytest.raises(DeclarationInvalid, match="zz is not in the scripts"):
        covered("b2..zz")
    with pytest.raises(DeclarationInvalid, match="script_location"):
        resolve_revisions(parse_declaration("b2..d4", kind="alembic"), None)


@pytest.mark.parametrize(
    ("declared", "at", "verdict"),
    [
        ("3..7", "3", "compatible"),
        ("3..7", "7", "compatible"),
        ("3..7", "8", "incompatible"),
        ("3..7", "2", "incompatible"),
        ("3..", "300", "compatible"),
        ("..7", "1", "compatible"),
        ("1.2..1.9", "1.10", "incompatible"),  # text order would say compatible
        ("1.2..1.10", "1.9", "compatible"),
        ("5", "5.0", "compatible"),
    ],
)
def test_ordered_verdicts_compare_versions_as_numbers(declared: str, at: str, verdict: str) -> None:
    result = judge(declared, _state("flyway", at))
    assert result.verdict == verdict
    assert result.allowed is (verdict == "compatible")


def test_an_incompatible_reason_names_the_schema_and_the_range() -> None:
    result = judge("1..5", _state("golang-migrate", "7"))
    assert result.verdict == "incompatible" and not result.allowed
    assert "golang-migrate version 7" in result.reason and "1..5" in result.reason and "newer than" in result.reason
    assert result.declared == "1..5"


def test_rails_uses_the_newest_applied_version() -> None:
    assert judge("..20240101000000", _state("rails", "20230101000000", "20250101000000")).verdict == "incompatible"


def test_alembic_verdicts() -> None:
    assert judge("c3,d4", _state("alembic", "d4")).verdict == "compatible"
    assert judge("a1,b2", _state("alembic", "d4")).verdict == "incompatible"
    assert judge("b2..c3", _state("alembic", "c3", parents=GRAPH)).verdict == "compatible"
    bad = judge("b2..c3", _state("alembic", "d4", parents=GRAPH))
    assert bad.verdict == "incompatible" and "revision d4" in bad.reason and "b2..c3" in bad.reason
    # branches applied side by side: every applied head must be covered
    assert judge("b2..", _state("alembic", "d4", "x9", parents=GRAPH)).verdict == "compatible"
    assert judge("c3,d4", _state("alembic", "d4", "x9", parents=GRAPH)).verdict == "incompatible"
    # a revision the scripts do not have (a newer release's migration) is outside every range
    assert judge("b2..", _state("alembic", "e5", parents=GRAPH)).verdict == "incompatible"
    # a range without the graph cannot be resolved: invalid, refused
    no_graph = judge("b2..c3", _state("alembic", "c3"))
    assert no_graph.verdict == "invalid" and not no_graph.allowed and "script_location" in no_graph.reason


def test_undeclared_is_allowed_with_a_warning_unless_required() -> None:
    state = _state("flyway", "3")
    assert judge(None, state).verdict == "undeclared" and judge(None, state).allowed
    assert judge("  ", state).allowed
    strict = judge(None, state, require_declaration=True)
    assert strict.verdict == "undeclared" and not strict.allowed and "requires" in strict.reason


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (_state("golang-migrate", "7", dirty=True), "dirty"),
        (_state("alembic", "c3", in_progress=True), "running now"),
        (_state("flyway", table_found=False, detail="no table flyway_schema_history"), "no migration is recorded"),
        (_state("flyway"), "no migration is recorded"),
        (_state("flyway", "abc"), "not a number"),
    ],
)
def test_a_database_that_cannot_be_judged_is_unknown_and_refused(state: SchemaState, words: str) -> None:
    # even an undeclared target: safety cannot be shown while the schema is unknown
    for declared in ("1..", None):
        result = judge(declared, state)
        assert result.verdict == "unknown" and not result.allowed and words in result.reason


def test_an_invalid_declaration_is_refused_naming_the_annotation() -> None:
    result = judge("7..3", _state("flyway", "5"))
    assert result.verdict == "invalid" and not result.allowed and ANNOTATION in result.reason


def test_declarations_are_read_from_pod_templates_and_manifests() -> None:
    template = {"metadata": {"annotations": {ANNOTATION: "3..5"}}}
    assert declaration_of_template(template) == "3..5"
    assert declaration_of_template({}) is None
    docs = [
        {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": template}},
        {"kind": "CronJob", "metadata": {"name": "nightly"}, "spec": {"jobTemplate": {"spec": {"template": {}}}}},
        {"kind": "Service", "metadata": {"name": "web"}},
    ]
    assert declarations_of_manifest(docs) == {"Deployment/web": "3..5", "CronJob/nightly": None}


def test_a_release_is_judged_by_its_declared_workloads() -> None:
    state = _state("flyway", "6")
    ok = judge_release({"Deployment/web": "5..", "Deployment/worker": None}, state)
    assert ok.verdict.verdict == "compatible" and ok.verdict.reason.startswith("Deployment/web:")
    assert set(ok.workloads) == {"Deployment/web", "Deployment/worker"}
    bad = judge_release({"Deployment/web": "5..", "Deployment/api": "..5"}, state)
    assert bad.verdict.verdict == "incompatible" and bad.verdict.reason.startswith("Deployment/api:")
    none = judge_release({"Deployment/web": None}, state, require_declaration=True)
    assert none.verdict.verdict == "undeclared" and not none.verdict.allowed
    assert judge_release({}, state).verdict.allowed
