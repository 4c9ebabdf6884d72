"""Telling people: a message through a saved Prefect notification block (Slack, Teams, a custom webhook, ...),
so each team keeps its own channel, credentials and format in one place and rollbook never holds a URL."""

from __future__ import annotations

import re
from typing import Any, cast

from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.notifications import NotificationBlock

from rollbook import redaction
from rollbook.types import BLOCK_REF
from tasks.policies import NOTIFY

_BLOCK_REF = re.compile(BLOCK_REF)
MAX_BODY_CHARS = 3500  # Slack cuts a message at about 4,000 characters: keep the evidence readable


@task(**NOTIFY)
def notify(block_ref: str, *, subject: str, body: str) -> str:
    """Send `body` through the notification block `block_ref`; returns the block's reference. Every string goes
    through the masking path first: evidence quoting an error must not carry a secret to a chat channel."""
    if not _BLOCK_REF.fullmatch(block_ref):
        raise ValueError(f"not a notification block reference (<block-type-slug>/<name>): {block_ref!r}")
    try:
        block = Block.load(block_ref)
    except ValueError as exc:
        raise ValueError(f"no notification block {block_ref!r}: create it in the Prefect UI (Blocks): {exc}") from None
    if not isinstance(block, NotificationBlock):
        raise TypeError(f"block {block_ref!r} is a {type(block).__name__}, not a notification block")
    text = redaction.redact(body)
    if len(text) > MAX_BODY_CHARS:
        text = text[: MAX_BODY_CHARS - 40] + "\n… (cut: the run's artifact has it all)"
    cast(Any, block).notify(body=text, subject=redaction.redact(subject))
    return block_ref
