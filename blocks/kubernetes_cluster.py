"""Connection to one Kubernetes cluster, from a kubeconfig file on the runner or an inline kubeconfig."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from pydantic import Field, SecretStr, model_validator
from urllib3.exceptions import ResponseNotChunked

from blocks._base import RollbookBlock
from rollbook import redaction
from rollbook.kube_errors import CONNECTION_ERRORS, ClusterUnreachable, request_line, unreachable
from rollbook.types import FormOptional

# Every Kubernetes request without its own `_request_timeout` gets this (connect, read) bound, so no call can
# hang a task: a Prefect task timeout cannot interrupt a blocking call in a worker thread (the checklist runs its
# checks concurrently), the socket timeout can. A watch passes its own, longer timeout.
DEFAULT_REQUEST_TIMEOUT: tuple[float, float] = (10.0, 60.0)

# Keys under a kubeconfig `users[].user` entry whose values grant access to the cluster.
_CREDENTIAL_KEYS = ("token", "password", "client-key-data", "client-certificate-data")


class KubernetesCluster(RollbookBlock):
    """Where a runbook's Kubernetes calls go. Give exactly one of a kubeconfig path or an inline kubeconfig."""

    _block_type_name = "Rollbook Kubernetes Cluster"
    _block_type_slug = "rollbook-kubernetes-cluster"
    _description = "A Kubernetes cluster reached through a kubeconfig (a path on the runner, or inline and secret)."

    kubeconfig_path: FormOptional[str] = Field(
        default=None,
        description="Path of a kubeconfig file on the machine that runs the flow. Leave empty if you paste one below.",
    )
    kubeconfig: FormOptional[SecretStr] = Field(
        default=None,
        description="Full kubeconfig YAML, stored as a secret. Leave empty if you give a path above.",
    )
    context: FormOptional[str] = Field(
        default=None,
        min_length=1,
        description="Kubeconfig context to use; empty means the kubeconfig's current-context.",
    )
    namespace: str = Field(
        default="default",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace runbooks use when a step does not name one.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        """Two sources would make it ambiguous which cluster a runbook touches; none would mean no cluster."""
        has_path = bool(self.kubeconfig_path and self.kubeconfig_path.strip())
        has_inline = self.kubeconfig is not None and bool(self.kubeconfig.get_secret_value().strip())
        if has_path == has_inline:
            raise ValueError("give exactly one of kubeconfig_path or kubeconfig (inline YAML)")
        return self

    @model_validator(mode="after")
    def _register_inline_credentials(self) -> Self:
        """A token inside an inline kubeconfig may be logged on its own, so register it as soon as we load."""
        if self.kubeconfig is not None:
            try:
                config_dict = _read_yaml_mapping(self.kubeconfig.get_secret_value(), "inline kubeconfig")
            except ValueError:
                return self  # reported with a clear message by api_client(); the whole value is registered anyway
            _register_kubeconfig_credentials(config_dict)
        return self

    def api_client(self) -> k8s_client.ApiClient:
        """A new client bound to this cluster only (never the process-global default configuration)."""
        if self.kubeconfig_path:
            path = Path(self.kubeconfig_path).expanduser()
            _register_kubeconfig_credentials(_read_yaml_mapping(path.read_text(), str(path)))
            # persist_config=False: refreshed tokens must not be written back into the user's file.
            return _bounded(
                k8s_config.new_client_from_config(config_file=str(path), context=self.context, persist_config=False),
                self.readyz_command(),
            )
        assert self.kubeconfig is not None  # guaranteed by _exactly_one_source
        config_dict = _read_yaml_mapping(redaction.reveal(self.kubeconfig), "inline kubeconfig")
        _register_kubeconfig_credentials(config_dict)
        return _bounded(
            k8s_config.new_client_from_config_dict(config_dict, context=self.context, persist_config=False),
            self.readyz_command(),
        )

    def readyz_command(self) -> str:
        """The kubectl command an SRE runs from this worker to see whether this cluster's API server answers;
        ClusterUnreachable quotes it. It names the kubeconfig by path (or says where an inline one lives), never
        its content."""
        if self.kubeconfig_path:
            source = shlex.quote(self.kubeconfig_path)
        else:
            name = self._block_document_name
            source = f"<inline kubeconfig of block {name!r}, saved to a file>" if name else "<the inline kubeconfig>"
        context = f" --context {shlex.quote(self.context)}" if self.context else ""
        return f"kubectl --kubeconfig {source}{context} get --raw /readyz"


def _bounded(api: k8s_client.ApiClient, check: str = "") -> k8s_client.ApiClient:
    """The client with DEFAULT_REQUEST_TIMEOUT for every call that does not bring its own (typed and dynamic
    clients alike pass `_request_timeout=None` to `call_api` when the caller gave none), and whose connection
    failures raise ClusterUnreachable naming the API server, the request and `check` (what to run), instead of
    urllib3's MaxRetryError. `call_api` is the one method every typed and dynamic call goes through."""
    call_api = api.call_api
    server = str(api.configuration.host)

    @functools.wraps(call_api)
    def call_bounded(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = DEFAULT_REQUEST_TIMEOUT
        try:
            response = call_api(method, url, *args, **kwargs)
        except ClusterUnreachable:
            raise
        except CONNECTION_ERRORS as exc:
            raise unreachable(server, exc, request=request_line(method, url), check=check) from exc
        _translate_read(response, server, request_line(method, url), check)
        return response

    api.call_api = call_bounded  # type: ignore[method-assign]
    return api


def _translate_read(response: Any, server: str, request: str, check: str) -> None:
    """The body is read after `call_api` returns (the client asks urllib3 not to preload it), so a connection
    dropped mid-body surfaces when it is read: translate it there too. The urllib3 response's own `read` is
    wrapped, as both `RESTResponse.read()` and the raw response a `_preload_content=False` caller gets (its
    `.data`) go through it; a watch reads through `read_chunked` instead (see `_translate_read_chunked`)."""
    raw: Any = getattr(response, "response", None)
    read = getattr(raw, "read", None)
    if raw is None or not callable(read):
        return

    @functools.wraps(read)
    def read_translated(*args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except ClusterUnreachable:
            raise
        except CONNECTION_ERRORS as exc:
            raise unreachable(server, exc, request=request, check=check) from exc

    try:
        raw.read = read_translated
    except (AttributeError, TypeError):  # a response type that takes no attributes: leave it as it is
        return
    _translate_read_chunked(raw, server, request, check)


def _translate_read_chunked(raw: Any, server: str, request: str, check: str) -> None:
    """A chunked body read as a stream (a watch: `Watch.stream` iterates `resp.stream()`, which hands a chunked
    body to `read_chunked`) never goes through `read`, so an API server restarting mid-watch raised urllib3's
    ProtocolError ("Connection broken: IncompleteRead", "Response ended prematurely"). Wrapped as a generator,
    so the events before the cut still arrive and only the cut raises ClusterUnreachable."""
    read_chunked = getattr(raw, "read_chunked", None)
    if not callable(read_chunked):
        return

    @functools.wraps(read_chunked)
    def read_chunked_translated(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        try:
            yield from read_chunked(*args, **kwargs)
        except (ClusterUnreachable, ResponseNotChunked):  # a body that is not chunked is no outage
            raise
        except CONNECTION_ERRORS as exc:
            raise unreachable(server, exc, request=request, check=check) from exc

    raw.read_chunked = read_chunked_translated  # `read` took an attribute, so this one does too


def _read_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse a kubeconfig, failing with a message that names the source but never echoes its content."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{source} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a kubeconfig mapping")
    return data


def _register_kubeconfig_credentials(config_dict: dict[str, Any]) -> None:
    """Tokens and keys inside a kubeconfig are secrets on their own, whichever way the file was given."""
    for entry in config_dict.get("users") or []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if isinstance(user, dict):
            for key in _CREDENTIAL_KEYS:
                value = user.get(key)
                if isinstance(value, str):
                    redaction.register(value)
