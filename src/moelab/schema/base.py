"""The strict pydantic base of moelab's file models, and the two ways to use one: check a mapping, print a schema.

Strict means: unknown keys are errors (the closest known key is suggested), numbers are finite, nothing is
coerced (`true` is not 1, `"8"` is not 8, `2.7` is not 2; an integer is still a valid float), and every
error of a file is collected before anything is raised.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from moelab.errors import MoelabError
from moelab.validation import error_items, format_errors, register_model


class StrictModel(BaseModel):
    """A file model: strict types, finite numbers, no unknown keys, immutable once validated."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True,
                              hide_input_in_errors=False, validate_default=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        register_model(cls)


def check(model: type[BaseModel], raw: Any) -> tuple[BaseModel | None, list[str]]:
    """(the validated model, []) or (None, every error as `field.path (message, got VALUE)`)."""
    try:
        return model.model_validate(raw), []
    except ValidationError as e:
        return None, error_items(e, model)


def validate(model: type[BaseModel], raw: Any, source: str) -> BaseModel:
    """The validated model, or one MoelabError line listing every error of `source`."""
    value, errors = check(model, raw)
    if errors:
        raise MoelabError(format_errors(source, errors))
    return value


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema for editors (draft 2020-12)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
