"""Shared base for rollbook's Prefect blocks."""

from __future__ import annotations

from abc import ABC
from typing import ClassVar, Self

from prefect.blocks.core import Block
from pydantic import ConfigDict, model_validator

from rollbook import redaction

redaction.install_prefect_egress()  # a process that loads a secret also scrubs its states and artifacts


class RollbookBlock(Block, ABC):
    """Registers every secret field with the log redactor the moment a block is built or loaded.

    `Block.load()` goes through `model_validate`, which skips `__init__`, so the hook is an after-validator:
    it runs for both `Block(...)` and `Block.load(...)`. `ABC` as a direct base keeps Prefect from
    registering this class itself as a block type.

    `hide_input_in_errors`: a failed validation must not print the raw input, which may be a secret that was
    never registered (validation failed before the hook could run).
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(hide_input_in_errors=True)

    @model_validator(mode="after")
    def _register_secrets_for_redaction(self) -> Self:
        redaction.register_model_secrets(self)
        return self
