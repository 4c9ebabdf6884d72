"""The Prefect block form of every rollbook block is plain inputs, and its secrets stay secret.

The UI draws a block's form from the block schema Prefect generates (`Block._to_block_schema`). A field typed
`X | None = None` becomes `anyOf [X, null]` with `"default": null`, which the form renders as a type toggle
("Property is type None"); `rollbook.types.FormOptional` drops both, as it does for the request models
(tests/unit/test_form_schema.py). These tests walk every block class in `blocks/` and check: no null branch or
null default is left (unless `NULL_TOGGLES` lists it, with its reason); every field defaulting to None is
`FormOptional`; SecretStr fields are still Prefect's `secret_fields` (masked by the API, `format: password`
in the form); a block saved with its optional fields left out, or created from the data a form sends (the
keys absent), loads with them None; and a blank is still judged by the field's type, never turned into None.

Runs against the session's temporary Prefect server (tests/conftest.py), no sandbox.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing
import uuid
from abc import ABC
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate
from pydantic import SecretStr, ValidationError

import blocks
from rollbook import redaction
from rollbook.types import InnerTypeSchema

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFakeKeyMaterialForForms\n-----END EC PRIVATE KEY-----\n"
KUBECONFIG = "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: kube-token-forms-0123456789\n"


def block_classes() -> list[type[Block]]:
    """Every concrete block type defined in a module of `blocks/` (found by walking the package, so a new
    module is checked without being listed here). `ABC` as a direct base marks a shared base, not a type."""
    found: list[type[Block]] = []
    for info in pkgutil.iter_modules(blocks.__path__):
        module = importlib.import_module(f"blocks.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Block) and cls.__module__ == module.__name__ and ABC not in cls.__bases__:
                found.append(cls)
    return sorted(found, key=lambda cls: cls.__name__)


BLOCKS = block_classes()


def block_schema(cls: type[Block]) -> dict[str, Any]:
    """The schema Prefect registers for the block type (what the UI draws the form from)."""
    fields: dict[str, Any] = cls._to_block_schema().fields
    return fields


def form_properties(cls: type[Block]) -> dict[str, dict[str, Any]]:
    """`Model.field` -> property schema for every input of the block's own form: its properties and those of
    plain models nested in it. A nested block (its definition has a `block_type_slug`, e.g. BackupBucket's
    prefect-aws S3Bucket) is drawn as a picker of saved blocks, not inline, so its fields belong to its own
    block type's form and are not walked."""
    schema = block_schema(cls)
    definitions: dict[str, Any] = schema.get("definitions", {})
    found: dict[str, dict[str, Any]] = {}

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
            return own + [name for value in node.values() for name in refs(value)]
        if isinstance(node, list):
            return [name for value in node for name in refs(value)]
        return []

    def walk(model: str, node: dict[str, Any]) -> None:
        for prop, sub in node.get("properties", {}).items():
            if f"{model}.{prop}" in found:
                continue
            found[f"{model}.{prop}"] = sub
            for name in refs(sub):
                definition = definitions.get(name, {})
                if "block_type_slug" not in definition:
                    walk(name, definition)

    walk(cls.__name__, schema)
    return found


def is_null_toggle(prop: dict[str, Any]) -> bool:
    return {"type": "null"} in prop.get("anyOf", []) or ("default" in prop and prop["default"] is None)


# Block form fields that keep the `anyOf [X, null]` toggle or a null default, and why. Empty: every optional
# field of a rollbook block is a scalar (text or a secret), where an empty input already says "none". A nested
# model or a list whose None differs from "empty" would be listed here with its reason, as request models do.
NULL_TOGGLES: dict[str, str] = {}


def test_every_block_type_is_walked() -> None:
    """The walk finds the types `prefect block register -m blocks` registers: none is silently unchecked."""
    listed = {getattr(blocks, name) for name in blocks.__all__}
    assert set(BLOCKS) == {cls for cls in listed if isinstance(cls, type) and issubclass(cls, Block)}
    assert len(BLOCKS) == 6


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda cls: cls.__name__)
def test_no_block_form_field_is_a_none_toggle_unless_listed(cls: type[Block]) -> None:
    toggles = {name: prop for name, prop in form_properties(cls).items() if is_null_toggle(prop)}
    assert set(toggles) - set(NULL_TOGGLES) == set(), toggles
    # the model's own schema (what `Block.model_json_schema` gives pydantic users) says the same
    own = cls.model_json_schema()["properties"]
    assert [p for p, sub in own.items() if is_null_toggle(sub) and f"{cls.__name__}.{p}" not in NULL_TOGGLES] == []


def test_every_listed_none_toggle_still_exists() -> None:
    """The allow-list does not outlive its fields."""
    every = {name for cls in BLOCKS for name, prop in form_properties(cls).items() if is_null_toggle(prop)}
    assert set(NULL_TOGGLES) - every == set()


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda cls: cls.__name__)
def test_every_field_defaulting_to_none_is_form_optional(cls: type[Block]) -> None:
    """The cause, not only the symptom: a field whose default is None carries FormOptional's schema marker,
    so its input starts empty and a form that leaves it out still gets None."""
    plain = [
        name
        for name, field in cls.model_fields.items()
        if field.default is None
        and not any(isinstance(m, InnerTypeSchema) for m in field.metadata)
        and f"{cls.__name__}.{name}" not in NULL_TOGGLES
    ]
    assert plain == []


def has_secret(annotation: Any) -> bool:
    """A field typed SecretStr, directly or as `SecretStr | None` (what FormOptional leaves as the annotation)."""
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and SecretStr in typing.get_args(annotation)


# Secret fields by block type: each must stay in Prefect's `secret_fields`, which is what makes the API and
# the UI mask it ("********") and the client obfuscate it unless secrets are asked for.
SECRETS: dict[str, set[str]] = {
    "ContainerRegistry": {"password"},
    "DatabaseConnection": {"dsn"},
    "EtcdEndpoint": {"client_key"},
    "KubernetesCluster": {"kubeconfig"},
    "PrometheusConnection": {"bearer_token"},
}


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda cls: cls.__name__)
def test_secret_fields_are_still_secret_in_the_block_schema(cls: type[Block]) -> None:
    schema = block_schema(cls)
    secret_fields = set(schema["secret_fields"])
    typed = {name for name, field in cls.model_fields.items() if has_secret(field.annotation)}
    assert typed <= secret_fields
    if cls.__name__ == "BackupBucket":
        # prefect-aws's nested credentials block owns these; the bucket's form only picks a saved one
        assert "bucket.credentials.aws_secret_access_key" in secret_fields
        return
    assert secret_fields == typed == SECRETS[cls.__name__]
    for name in typed:
        prop = schema["properties"][name]
        assert (prop["type"], prop["format"], prop["writeOnly"]) == ("string", "password", True), (name, prop)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda cls: cls.__name__)
def test_the_server_registers_the_same_schema(cls: type[Block]) -> None:
    """What the server stores (and the UI reads) is the local schema: no toggle, the same secret fields."""
    cls.register_type_and_schema()
    with get_client(sync_client=True) as client:
        stored = client.read_block_schema_by_checksum(cls._calculate_schema_checksum())
    local = block_schema(cls)
    assert stored.fields["secret_fields"] == local["secret_fields"]
    assert stored.fields["properties"] == local["properties"]


# The least a form can hold for each block with optional fields, and the secret field it gives, if any
# (BackupBucket and DatabaseConnection have no optional field: their round trips are
# tests/prefect/test_blocks_server.py's).
MINIMAL: dict[str, tuple[dict[str, Any], str]] = {
    "ContainerRegistry": ({"url": "registry.local:5000"}, ""),
    "EtcdEndpoint": ({"endpoints": ["http://10.0.0.1:2379"]}, ""),
    "KubernetesCluster": ({"kubeconfig": KUBECONFIG}, "kubeconfig"),
    "PrometheusConnection": ({"url": "http://prometheus:9090"}, ""),
}
MINIMAL_BLOCKS = [cls for cls in BLOCKS if cls.__name__ in MINIMAL]


def optional_fields(cls: type[Block]) -> list[str]:
    return [name for name, field in cls.model_fields.items() if field.default is None]


def test_every_block_with_optional_fields_has_a_minimal_form() -> None:
    assert {cls.__name__ for cls in BLOCKS if optional_fields(cls)} == set(MINIMAL)


@pytest.mark.parametrize("how", ["saved from python (nulls)", "created like the form (keys left out)"])
@pytest.mark.parametrize("cls", MINIMAL_BLOCKS, ids=lambda cls: cls.__name__)
def test_optional_fields_left_out_load_as_none(cls: type[Block], how: str) -> None:
    data, secret_field = MINIMAL[cls.__name__]
    name = f"form-{uuid.uuid4().hex[:8]}"
    if how.startswith("saved"):
        cls(**data).save(name)
    else:
        cls.register_type_and_schema()
        assert cls._block_schema_id is not None and cls._block_type_id is not None
        with get_client(sync_client=True) as client:
            client.create_block_document(
                BlockDocumentCreate(
                    name=name, data=data, block_schema_id=cls._block_schema_id, block_type_id=cls._block_type_id
                )
            )
    redaction.clear()
    loaded = cls.load(name)
    left_out = [field for field in optional_fields(cls) if field not in data]
    assert left_out and all(getattr(loaded, field) is None for field in left_out)
    if not secret_field:
        return
    secret = getattr(loaded, secret_field)
    assert isinstance(secret, SecretStr) and secret.get_secret_value() == data[secret_field]
    assert data[secret_field] in redaction.registered(), "loading registers the secret for log redaction"
    assert data[secret_field] not in repr(loaded) and data[secret_field] not in str(loaded)
    with get_client(sync_client=True) as client:
        masked = client.read_block_document_by_name(name, cls.get_block_type_slug(), include_secrets=False)
    assert masked.data[secret_field] == "********"


def test_given_optional_secrets_round_trip_masked() -> None:
    """The FormOptional secrets themselves: kept through save and load, masked by the API and in repr."""
    cases: list[tuple[Block, str, str]] = [
        (blocks.ContainerRegistry(url="r.local", username="ci", password="forms-reg-pw"), "password", "forms-reg-pw"),
        (
            blocks.PrometheusConnection(url="http://p:9090", bearer_token="forms-prom-tok"),
            "bearer_token",
            "forms-prom-tok",
        ),
        (
            blocks.EtcdEndpoint(
                endpoints=["https://10.0.0.1:2379"], ca_cert=PEM_CERT, client_cert=PEM_CERT, client_key=PEM_KEY
            ),
            "client_key",
            PEM_KEY,
        ),
    ]
    for block, field, secret in cases:
        name = f"form-{uuid.uuid4().hex[:8]}"
        block.save(name)
        loaded = type(block).load(name)
        assert loaded.model_dump() == block.model_dump()
        assert getattr(loaded, field).get_secret_value() == secret
        assert secret not in repr(loaded) and secret not in loaded.model_dump_json()
        with get_client(sync_client=True) as client:
            masked = client.read_block_document_by_name(name, type(block).get_block_type_slug(), include_secrets=False)
        assert masked.data[field] == "********"


class TestBlankIsJudgedByTheFieldType:
    """A blank ("") is not "left out": FormOptional keeps it, and the field's own rule decides, as before."""

    def test_blank_text_stays_text(self) -> None:
        registry = blocks.ContainerRegistry(url="r.local", username="")
        assert registry.username == "" and registry.credentials() is None
        cluster = blocks.KubernetesCluster(kubeconfig_path="", kubeconfig=KUBECONFIG)  # a blank path is no path
        assert cluster.kubeconfig_path == ""

    @pytest.mark.parametrize(
        ("cls", "given", "words"),
        [
            ("KubernetesCluster", {"kubeconfig": KUBECONFIG, "context": ""}, "at least 1 character"),
            ("KubernetesCluster", {"kubeconfig": ""}, "exactly one"),
            ("ContainerRegistry", {"url": "r.local", "cosign_public_key": ""}, "PEM public key"),
            ("EtcdEndpoint", {"endpoints": ["http://e:2379"], "ca_cert": ""}, "PEM certificate"),
            (
                "EtcdEndpoint",
                {"endpoints": ["http://e:2379"], "client_cert": PEM_CERT, "client_key": ""},
                "PEM private",
            ),
        ],
    )
    def test_blank_is_refused_where_the_type_refuses_it(self, cls: str, given: dict[str, Any], words: str) -> None:
        with pytest.raises(ValidationError, match=words):
            getattr(blocks, cls)(**given)

    def test_validators_still_refuse_without_echoing_a_secret(self) -> None:
        with pytest.raises(ValidationError, match="a password needs a username") as excinfo:
            blocks.ContainerRegistry(url="r.local", password="forms-never-echoed")
        assert "forms-never-echoed" not in str(excinfo.value)
