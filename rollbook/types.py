"""Validated types for every name, reference and number a runbook takes from a person.

A namespace, a release, an image or a revision means the same thing in every flow, so each is one type here and
is checked the same way everywhere, before any task runs. Each check runs before pydantic's own constraints and
says the rule in the user's words (pydantic's would name a regular expression); the `Field` constraints stay
for the JSON schema, so the Prefect form shows them too. Numbers are strict: `true` or `"3"` is not a
revision, because a boolean silently becoming revision 1 rolls back to the wrong place.

`FormOptional[T]` makes any of them optional for a form: None when not given, shown as T's own input (no
"None" type toggle).
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler, JsonValue, StrictInt
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from rollbook.values import ValuesError, check_values, load_yaml

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# helm's own rule (pkg/chartutil ValidateReleaseName): a DNS subdomain of at most 53 characters, because charts
# append suffixes to it to name their objects
RELEASE_NAME = DNS_SUBDOMAIN
# the OCI distribution spec's tag rule
OCI_TAG = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
_REPOSITORY = r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
IMAGE_REPOSITORY = rf"^{_REPOSITORY}$"
# registry[:port]/path[:tag][@sha256:digest], lower-case path components, as the distribution spec allows
IMAGE_REF = rf"^{_REPOSITORY}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
IMAGE_DIGEST = r"^sha256:[a-f0-9]{64}$"
# Prefect's "<block-type-slug>/<block-name>", which names a saved block of any type
BLOCK_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Prefect's rule for block document names
BLOCK_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OCI_CHART = r"^oci://[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$"
HTTP_CHART = r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._~%/+-]*\.tgz$"
REPO_CHART = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?/[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$"

PATH_MAX = 4096  # Linux: longer paths fail with "File name too long" (OSError) when used
NAME_MAX = 255  # one path component
REVISION_LIMIT = 2**63  # helm and Kubernetes store revisions as signed 64-bit numbers
REPLICAS_LIMIT = 2**31  # Kubernetes' replicas field is an int32
QUANTITY_LIMIT = 2**63
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40


def _refuse(message: str) -> PydanticCustomError:
    # the message goes through the context, so braces a user typed are never read as a template
    return PydanticCustomError("rollbook_rule", "{message}", {"message": message})


def shown(value: object) -> str:
    """A user's value as quoted in an error: long values are cut, so a 10,000-character name stays one line,
    and nested ones are abbreviated (reprlib), so a mapping 20,000 levels deep is shown, not a RecursionError."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4096:
        return f"a number of {value.bit_length()} bits"  # Python refuses to print more than 4,300 digits
    text = repr(value) if isinstance(value, str) else _SHORT.repr(value)
    if len(text) <= 60:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:40]}…{size}"


def _text_rule(kind: str, rule: str, pattern: str, max_length: int) -> BeforeValidator:
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise _refuse(f"{kind} must be text, got {shown(value)}")
        if not value:
            raise _refuse(f"{kind} must not be empty: {rule}")
        if len(value) > max_length:
            raise _refuse(f"{kind} is at most {max_length} characters, got {len(value)}: {rule}")
        if not compiled.fullmatch(value):
            raise _refuse(f"not a valid {kind}: {shown(value)}; {rule}")
        return value

    return BeforeValidator(check)


def _schema(pattern: str, max_length: int) -> Any:
    """The same rule as JSON-schema constraints, for the Prefect form (checked again, after the clear check)."""
    return Field(min_length=1, max_length=max_length, pattern=pattern)


_LABEL_RULE = "lower-case letters, digits and '-', starting and ending with a letter or digit"
_LABEL = f"a DNS-1123 label: 1-63 {_LABEL_RULE}"
_SUBDOMAIN = f"a DNS-1123 subdomain: at most 253 {_LABEL_RULE}, in parts separated by '.'"
_RELEASE = f"helm's rule: at most 53 {_LABEL_RULE} (parts separated by '.' allowed)"
_TAG = "at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-' (no spaces, ':' or ';')"
_REPO = "[registry[:port]/]path of lower-case letters and digits, with '.', '_' or '-' between them (no tag)"
_REF = "[registry[:port]/]repository[:tag][@sha256:<64 hex digits>], lower-case repository, no spaces or ';'"

Namespace = Annotated[str, _schema(DNS_LABEL, 63), _text_rule("namespace", _LABEL, DNS_LABEL, 63)]
DnsLabel = Annotated[str, _schema(DNS_LABEL, 63), _text_rule("name", _LABEL, DNS_LABEL, 63)]
ResourceName = Annotated[
    str, _schema(DNS_SUBDOMAIN, 253), _text_rule("Kubernetes object name", _SUBDOMAIN, DNS_SUBDOMAIN, 253)
]
ReleaseName = Annotated[str, _schema(RELEASE_NAME, 53), _text_rule("helm release name", _RELEASE, RELEASE_NAME, 53)]
ImageTag = Annotated[str, _schema(OCI_TAG, 128), _text_rule("image tag", _TAG, OCI_TAG, 128)]
ImageRepository = Annotated[
    str, _schema(IMAGE_REPOSITORY, 512), _text_rule("image repository", _REPO, IMAGE_REPOSITORY, 512)
]
ImageRef = Annotated[str, _schema(IMAGE_REF, 1024), _text_rule("image reference", _REF, IMAGE_REF, 1024)]
ImageDigest = Annotated[
    str, _schema(IMAGE_DIGEST, 71), _text_rule("image digest", "sha256: and 64 lower-case hex digits", IMAGE_DIGEST, 71)
]
BlockRef = Annotated[
    str,
    _schema(BLOCK_REF, 300),
    _text_rule("block reference", "<block-type-slug>/<name>, e.g. slack-webhook/security", BLOCK_REF, 300),
]
# Kubernetes label keys ([prefix/]name: a DNS subdomain prefix, a name of at most 63 characters) and values
# (at most 63 characters, may be empty), as the API server validates them (IsQualifiedName / IsValidLabelValue)
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = rf"^({DNS_SUBDOMAIN[1:-1]}/)?{_LABEL_NAME}$"
LABEL_VALUE = rf"^({_LABEL_NAME})?$"
# an absolute path inside a container image: no spaces, quotes or shell characters
CONTAINER_PATH = r"^(/[A-Za-z0-9._+-]+)+$"
_LABEL_KEY_RULE = (
    "[prefix/]name: an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)
_LABEL_VALUE_RULE = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty)"
_CONTAINER_PATH_RULE = "an absolute path of letters, digits, '.', '_', '+' or '-' between '/' (no spaces)"


def _label_value(value: object) -> object:
    if not isinstance(value, str):
        raise _refuse(f"label value must be text, got {shown(value)}")
    if len(value) > 63 or not re.fullmatch(LABEL_VALUE, value):
        raise _refuse(f"not a valid label value: {shown(value)}; {_LABEL_VALUE_RULE}")
    return value


LabelKey = Annotated[str, _schema(LABEL_KEY, 317), _text_rule("label key", _LABEL_KEY_RULE, LABEL_KEY, 317)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE), BeforeValidator(_label_value)]
ContainerPath = Annotated[
    str, _schema(CONTAINER_PATH, 255), _text_rule("path in the image", _CONTAINER_PATH_RULE, CONTAINER_PATH, 255)
]
BlockName = Annotated[
    str,
    _schema(BLOCK_NAME, 255),
    _text_rule("block name", "Prefect's rule: lower-case letters, digits and '-'", BLOCK_NAME, 255),
]


def _whole_number(kind: str, low: int, limit: int) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(f"{kind} must be a whole number (not true/false or quoted text), got {shown(value)}")
        if not low <= value < limit:
            raise _refuse(f"{kind} must be at least {low} and below {limit:,}, got {shown(value)}")
        return value

    return BeforeValidator(check)


Revision = Annotated[StrictInt, Field(ge=1, lt=REVISION_LIMIT), _whole_number("a revision", 1, REVISION_LIMIT)]
Replicas = Annotated[StrictInt, Field(ge=0, lt=REPLICAS_LIMIT), _whole_number("a replica count", 0, REPLICAS_LIMIT)]
# zero is a real request (a container without a CPU or memory request); negative never is
Millicores = Annotated[StrictInt, Field(ge=0, lt=QUANTITY_LIMIT), _whole_number("CPU in millicores", 0, QUANTITY_LIMIT)]
MemoryBytes = Annotated[StrictInt, Field(ge=0, lt=QUANTITY_LIMIT), _whole_number("memory in bytes", 0, QUANTITY_LIMIT)]


def _audit_text(value: object) -> object:
    if not isinstance(value, str):
        raise _refuse(f"must be text, got {shown(value)}")
    stripped = value.strip()
    if not stripped:
        raise _refuse("must say something: it is recorded on every object the run changes, and blanks say nothing")
    if _CONTROL.search(stripped):
        raise _refuse("must not contain control characters (only text, tabs and line breaks)")
    return stripped


# stripped, never blank; each field keeps its own length bounds (`Field(min_length=..., max_length=...)`)
AuditText = Annotated[str, BeforeValidator(_audit_text)]


def _path_text(kind: str, value: object) -> str:
    """Bounds every local path: longer ones make the OS raise "File name too long" when they are used."""
    if not isinstance(value, str):
        raise _refuse(f"{kind} must be text, got {shown(value)}")
    if not value:
        raise _refuse(f"{kind} must not be empty")
    if "\x00" in value or _CONTROL.search(value):
        raise _refuse(f"{kind} must not contain control characters")
    if len(value) > PATH_MAX:
        raise _refuse(f"{kind} is at most {PATH_MAX} characters, got {len(value)}")
    if any(len(part) > NAME_MAX for part in value.split("/")):
        raise _refuse(f"{kind} has a part longer than {NAME_MAX} characters, which no file system allows")
    return value


def _local_path(value: object) -> object:
    return _path_text("a path", value)


# a file or program on the runner (kubeconfig, cosign key, helm binary): bounded, checked when used
LocalPath = Annotated[str, Field(min_length=1, max_length=PATH_MAX), BeforeValidator(_local_path)]


def _chart(value: object) -> object:
    """helm's order: an existing local path wins, then oci://, an http(s) archive URL, or repo/chart."""
    text = _path_text("a chart", value)
    if text.startswith("oci://"):
        if not re.fullmatch(OCI_CHART, text):
            raise _refuse(f"{shown(text)} is not a valid chart reference: oci://registry[:port]/path/chart")
        return text
    if text.startswith(("http://", "https://")):
        if not re.fullmatch(HTTP_CHART, text):
            raise _refuse(f"{shown(text)} is not a valid chart URL: http(s)://host[:port]/path/chart.tgz")
        return text
    try:
        exists = Path(text).expanduser().exists()
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: '~user' that does not exist
        raise _refuse(f"chart {shown(text)} cannot be read: {exc}") from None
    if exists or re.fullmatch(REPO_CHART, text):
        return text
    raise _refuse(
        f"chart not found: {shown(text)} is no directory or archive on this runner, "
        "nor an oci://registry/path/chart or repo/chart reference"
    )


ChartRef = Annotated[str, Field(min_length=1, max_length=PATH_MAX), BeforeValidator(_chart)]


def _values_yaml(value: object) -> object:
    if not isinstance(value, str):
        raise _refuse(f"must be a YAML document as text, got {shown(value)}")
    try:
        load_yaml(value, field="the YAML document")
    except ValuesError as exc:
        raise _refuse(str(exc)) from None
    return value


# a YAML values document, loaded with the size, depth and alias limits of `rollbook.values.load_yaml`
ValuesYaml = Annotated[str, BeforeValidator(_values_yaml)]


def _values(value: object) -> object:
    if not isinstance(value, dict):
        raise _refuse(f"must be a mapping of keys to values, got {shown(value)}")
    try:
        check_values(value, field="the mapping")
    except ValuesError as exc:
        raise _refuse(str(exc)) from None
    return value


# helm values given as a mapping: the same depth and size limits as a YAML document
Values = Annotated[dict[str, JsonValue], BeforeValidator(_values)]


class InnerTypeSchema:
    """The field's JSON schema is its inner type's, without the `{"type": "null"}` branch, and without the
    `"default": null`, so the Prefect form draws a plain input instead of a type toggle ("Property is type
    None"). Why drop the default: the form (prefect/server/ui, SchemaFormProperty) fills a field with its
    schema default, so `null` would be sent, and the server then refuses it (a property with a default is
    checked as its plain type). Without a default the input starts empty and an empty input is left out of
    the parameters (SchemaFormPropertyString sends nothing for ""), so the field takes its Python default,
    None; Prefect's own schema check still accepts an explicit null for a property that is neither required
    nor defaulted (`preprocess_schema`)."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        branches = [b for b in json_schema.get("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1 and len(json_schema["anyOf"]) == 2:
            del json_schema["anyOf"]
            json_schema.update(branches[0])
            if "enum" in json_schema and None not in json_schema["enum"]:
                # Prefect's null allowance replaces only "type", so a choice must list null itself; the
                # form offers only the text options (no "None" entry appears)
                json_schema["enum"] = [*json_schema["enum"], None]
        return json_schema


def _no_null_default(schema: dict[str, Any]) -> None:
    # runs on the field's schema, after pydantic added its default (see InnerTypeSchema)
    if "default" in schema and schema["default"] is None:
        del schema["default"]


T = TypeVar("T")
# `FormOptional[Namespace]`: a namespace, or None when not given. Python sees `T | None`, so flows keep
# testing `is None`; a value is checked by T exactly as before. Text "" does not become None: T judges it
# (every name, path and number type refuses it), because a blank that arrives (an unset shell variable in
# `rollbook run namespace=$NS`) is a mistake that must not turn into "the default namespace" or "the
# previous revision"; the form never sends one (an empty input is left out). For scalars (text, numbers,
# URLs, choices); a nested model or a list keeps `X | None`, where "none" is a choice of its own
# (tests/unit/test_form_schema.py lists them).
FormOptional = Annotated[T | None, InnerTypeSchema(), Field(json_schema_extra=_no_null_default)]

__all__ = [
    "AuditText",
    "BlockName",
    "BlockRef",
    "ChartRef",
    "ContainerPath",
    "DnsLabel",
    "FormOptional",
    "ImageDigest",
    "ImageRef",
    "ImageRepository",
    "ImageTag",
    "InnerTypeSchema",
    "LabelKey",
    "LabelValue",
    "LocalPath",
    "MemoryBytes",
    "Millicores",
    "Namespace",
    "ReleaseName",
    "Replicas",
    "ResourceName",
    "Revision",
    "Values",
    "ValuesYaml",
    "shown",
]
