"""`rollbook.types.FormOptional`: an optional scalar that the Prefect form shows as a plain input, not a None toggle.

Left out (what the form sends for an empty input) or null, it is None; a valid value is kept; anything else,
"" included, is refused as strictly as the inner type refuses it, naming the field; and the JSON schema is the
inner type's: no `{"type": "null"}` branch and no `"default": null` (tests/unit/test_form_schema.py checks the
same of every deployment's form).
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError

from rollbook.types import BlockName, FormOptional, LocalPath, Namespace, Revision


class Form(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    namespace: FormOptional[Namespace] = Field(default=None, description="empty: the kubeconfig's namespace")
    block: FormOptional[BlockName] = Field(default=None)
    path: FormOptional[LocalPath] = Field(default=None)
    revision: FormOptional[Revision] = Field(default=None)
    seconds: FormOptional[int] = Field(default=None, ge=1, le=60)
    url: FormOptional[HttpUrl] = Field(default=None)
    secret: FormOptional[SecretStr] = Field(default=None)
    text: FormOptional[str] = Field(default=None, pattern=r"^etcd-[0-9]+$", max_length=16)
    choice: FormOptional[Literal["nginx-ingress", "envoy-gateway"]] = Field(default=None)


def refusal(given: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as excinfo:
        Form.model_validate(given)
    (error,) = excinfo.value.errors(include_url=False)
    return ".".join(str(part) for part in error["loc"]), str(error["msg"])


def test_left_out_or_null_is_none() -> None:
    every = {name: None for name in Form.model_fields}
    assert Form.model_validate({}) == Form.model_validate(every)
    assert all(value is None for value in Form.model_validate({}).model_dump().values())


def test_valid_values_are_kept() -> None:
    form = Form.model_validate(
        {"namespace": "team-a", "block": "prod", "path": "/tmp/kc", "revision": 3, "seconds": 5, "text": "etcd-1"}
    )
    assert (form.namespace, form.block, form.path, form.revision, form.seconds) == ("team-a", "prod", "/tmp/kc", 3, 5)
    assert form.text == "etcd-1"
    assert str(Form.model_validate({"url": "http://p:9090"}).url) == "http://p:9090/"
    assert Form.model_validate({"secret": "s3cret"}).secret == SecretStr("s3cret")
    assert Form.model_validate({"choice": "envoy-gateway"}).choice == "envoy-gateway"


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        # "" is not "not given": an unset variable must not become the default namespace or previous revision
        ({"namespace": ""}, "namespace", "namespace must not be empty"),
        ({"revision": ""}, "revision", "whole number"),
        ({"path": ""}, "path", "must not be empty"),
        ({"namespace": "Team_A"}, "namespace", "not a valid namespace"),
        ({"namespace": " "}, "namespace", "not a valid namespace"),
        ({"block": "My Block"}, "block", "not a valid block name"),
        ({"revision": True}, "revision", "whole number"),  # a boolean never becomes revision 1
        ({"revision": "3"}, "revision", "whole number"),
        ({"revision": 0}, "revision", "at least 1"),
        ({"seconds": True}, "seconds", "valid integer"),
        ({"seconds": 0}, "seconds", "greater than or equal to 1"),
        ({"url": "not a url"}, "url", "URL"),
        ({"text": "etcd-x"}, "text", "pattern"),
        ({"path": "a\x01b"}, "path", "control characters"),
        ({"choice": "haproxy"}, "choice", "'nginx-ingress' or 'envoy-gateway'"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(given: dict[str, Any], field: str, words: str) -> None:
    where, message = refusal(given)
    assert where == field
    assert words in message


def test_the_schema_is_the_inner_types_without_null_or_null_default() -> None:
    schema = Form.model_json_schema()
    properties = schema["properties"]
    for name, prop in properties.items():
        assert "anyOf" not in prop and "default" not in prop, (name, prop)
        assert prop["type"] in ("string", "integer"), (name, prop)
    assert "required" not in schema
    assert properties["namespace"]["pattern"] and properties["namespace"]["minLength"] == 1
    assert properties["namespace"]["description"] == "empty: the kubeconfig's namespace"
    assert (properties["seconds"]["minimum"], properties["seconds"]["maximum"]) == (1, 60)
    assert properties["revision"]["minimum"] == 1
    assert properties["url"]["format"] == "uri"
    assert properties["secret"]["format"] == "password" and properties["secret"]["writeOnly"] is True
    assert properties["text"]["maxLength"] == 16
    # a choice lists null as well: Prefect's server check lets a null through only by the "type", not an enum
    assert properties["choice"]["enum"] == ["nginx-ingress", "envoy-gateway", None]


def test_a_plain_optional_field_still_has_the_toggle() -> None:
    """The contrast the helper exists for: `X | None = None` renders as anyOf with null and a null default."""

    class Plain(BaseModel):
        namespace: Namespace | None = None

    prop = Plain.model_json_schema()["properties"]["namespace"]
    assert {"type": "null"} in prop["anyOf"] and prop["default"] is None
