"""Pure helpers between a judge's text and the pydantic schema DeepEval asked for (no model).

A judge's JSON can be cut off by the token budget, carry scores outside the range the prompt
asked for, or miss fields. :func:`coerce_to_schema` always returns an instance: the object is
extracted (and, when cut off, repaired by ``json-repair``), numeric scores are clamped into the
prompt's range (a G-Eval score of 15 on a 0–10 scale would otherwise normalise to 1.5), and a
missing or invalid field gets a neutral placeholder — so an unreadable judge call shows up as a
placeholder reason, not as a crashed evaluation.
"""

from __future__ import annotations

import copy
import json
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Bounds added to the schema given to the decoder (not to the pydantic validation).
DEFAULT_MAX_STRING_CHARS = 160
DEFAULT_MAX_ITEMS = 4
_SCORE_RANGE_RE = re.compile(
    r"score\W[^\n]{0,80}?between\s+(-?\d+(?:\.\d+)?)\s+and\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE
)
_DECODER = json.JSONDecoder()


def bounded_json_schema(
    schema: type[BaseModel],
    *,
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> dict[str, Any]:
    """The schema's JSON schema with length bounds on every string and array.

    Why: a decoder constrained to an unbounded schema can keep a string open until the token
    budget runs out, and the JSON never closes. Bounds that fit the budget guarantee it does.
    Enumerations (verdicts) are already bounded and left as they are.
    """
    out = copy.deepcopy(schema.model_json_schema())

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "const" not in node:
                node["maxLength"] = min(
                    int(node.get("maxLength", max_string_chars)), max_string_chars
                )
            if node.get("type") == "array":
                node["maxItems"] = min(int(node.get("maxItems", max_items)), max_items)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    return out


def parse_score_range(prompt: str) -> tuple[float, float] | None:
    """The score range a judge prompt asks for ("score": an integer between 0 and 10)."""
    match = _SCORE_RANGE_RE.search(prompt)
    if not match:
        return None
    low, high = float(match.group(1)), float(match.group(2))
    return (low, high) if low <= high else (high, low)


def _first_object(text: str) -> Any:
    """The complete JSON value that starts at the first ``{`` (ValueError if there is none)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return _DECODER.raw_decode(text, start)[0]


def json_object_complete(text: str) -> bool:
    """Whether the first JSON object in ``text`` has closed (the judge's stopping rule)."""
    try:
        _first_object(text)
    except ValueError:
        return False
    return True


def extract_json_object(text: str) -> tuple[Any, bool]:
    """The first JSON object in ``text`` and whether it had to be repaired.

    Repair (``json-repair``) closes what a cut-off generation left open (a string, arrays,
    objects) and drops a dangling key or comma, so a budget-truncated answer still yields its
    complete fields.
    """
    start = text.find("{")
    if start < 0:
        return {}, True
    try:
        return _first_object(text), False
    except ValueError:
        pass
    import json_repair

    repaired = json_repair.loads(text[start:])
    return (repaired if isinstance(repaired, dict) else {}), True


def clamp_scores(data: Any, score_range: tuple[float, float] | None) -> Any:
    """Clamp every numeric ``*score*`` field (any depth) into ``score_range``; NaN → minimum."""
    if score_range is None:
        return data
    low, high = score_range
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if (
                "score" in key.lower()
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                value = low if math.isnan(float(value)) else min(max(value, low), high)
            out[key] = clamp_scores(value, score_range)
        return out
    if isinstance(data, list):
        return [clamp_scores(item, score_range) for item in data]
    return data


def _placeholder(annotation: Any) -> Any:
    """A type-correct stand-in for a missing or invalid required field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args:
            return None
        return _placeholder(args[0])
    if origin is Literal:
        return args[-1] if len(args) > 2 else args[0]
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        return []
    if origin is dict or annotation is dict:
        return {}
    if annotation is str:
        return ""
    if annotation is bool:
        return False
    if annotation in (int, float):
        return 0
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {
            name: _placeholder(field.annotation)
            for name, field in annotation.model_fields.items()
            if field.is_required()
        }
    return None


def coerce_to_schema(
    text: str, schema: type[SchemaT], *, score_range: tuple[float, float] | None = None
) -> tuple[SchemaT, bool]:
    """Parse ``text`` into ``schema``: extract, clamp, validate; repair what fails.

    Returns the instance and whether anything had to be repaired (truncated JSON, a missing or
    invalid field replaced by a neutral placeholder).
    """
    data, repaired = extract_json_object(text)
    if not isinstance(data, dict):
        data, repaired = {}, True
    data = clamp_scores(data, score_range)
    try:
        return schema.model_validate(data), repaired
    except ValidationError as exc:
        bad = {str(err["loc"][0]) for err in exc.errors() if err.get("loc")}
    fixed = {k: v for k, v in data.items() if k in schema.model_fields and k not in bad}
    for name, field in schema.model_fields.items():
        if name not in fixed and field.is_required():
            fixed[name] = _placeholder(field.annotation)
    if score_range is not None:
        fixed = clamp_scores({**fixed}, score_range)
        for name, field in schema.model_fields.items():
            if "score" in name.lower() and field.annotation in (int, float) and name in bad:
                fixed[name] = score_range[0]
    try:
        return schema.model_validate(fixed), True
    except ValidationError:
        return schema.model_construct(**fixed), True
