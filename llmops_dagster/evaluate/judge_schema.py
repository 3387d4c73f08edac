"""Pure helpers between a judge's text and the pydantic schema DeepEval asked for (no model).

A judge's JSON can be cut off by the token budget, carry scores outside the range the prompt
asked for, or miss fields. :func:`coerce_to_schema` extracts the object (and, when cut off,
repairs it with ``json-repair``: the call is then counted as *repaired*), clamps numeric scores
into the prompt's range (a G-Eval score of 15 on a 0–10 scale would otherwise normalise to 1.5)
and validates it. What still does not fit the schema raises :class:`JudgeOutputError`: no JSON
object, a missing or invalid required field, a verdict outside the schema's values, or an empty
list where the list is what gets scored. Why no neutral placeholder: DeepEval scores an empty
verdict list as 1.0 and a ``borderline`` verdict as passing, so a stand-in for an unreadable
answer would score as a *pass*. Raising makes DeepEval record the metric as errored for that
case, which the evaluation scores 0 and counts.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Bounds added to the schema given to the decoder (not to the pydantic validation).
DEFAULT_MAX_STRING_CHARS = 160
DEFAULT_MAX_ITEMS = 4
_SCORE_RANGE_RE = re.compile(
    r"score\W[^\n]{0,80}?between\s+(-?\d+(?:\.\d+)?)\s+and\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE
)
_DECODER = json.JSONDecoder()

#: List fields that are *what gets scored*: DeepEval's QAG metrics (faithfulness, answer
#: relevancy, …) score the share of passing ``verdicts`` with an empty list scoring 1.0
#: (``score_qag_verdicts(empty_score=1)``), and ask for verdicts only per extracted claim or
#: statement — so an empty ``claims``/``statements`` list also ends in a trivial 1.0. An empty
#: one is an unusable judge answer, not a perfect score. (``truths`` may be empty: an empty
#: retrieval context has none, and it is not what is scored.)
NONEMPTY_LIST_FIELDS = frozenset({"verdicts", "claims", "statements"})
#: Of those, the ones the local judge's decoder is *forced* to fill (``minItems: 1``): DeepEval
#: asks for verdicts only when there are items to judge, so an empty verdict list is never a
#: right answer. An empty claim/statement extraction may be honest (an answer that says
#: nothing): forcing an item there would invent one, so it stays an error instead.
FORCED_NONEMPTY_FIELDS = frozenset({"verdicts"})


class JudgeError(RuntimeError):
    """A judge cannot be built (bad configuration) or cannot answer."""


class JudgeOutputError(JudgeError):
    """The judge answered, but its output does not fit the schema DeepEval asked for."""

    def __init__(self, schema: type[BaseModel], problem: str, text: str) -> None:
        self.schema_name = schema.__name__
        self.problem = problem
        shown = text if len(text) <= 160 else text[:160] + "…"
        super().__init__(f"judge output for {schema.__name__}: {problem} (output: {shown!r})")


def bounded_json_schema(
    schema: type[BaseModel],
    *,
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> dict[str, Any]:
    """The schema's JSON schema with length bounds on every string and array.

    Why: a decoder constrained to an unbounded schema can keep a string open until the token
    budget runs out, and the JSON never closes. Bounds that fit the budget guarantee it does.
    Enumerations (verdicts) are already bounded and left as they are. Top-level lists in
    :data:`FORCED_NONEMPTY_FIELDS` get ``minItems: 1`` (validation would reject them empty).
    """
    out = copy.deepcopy(schema.model_json_schema())
    for name, prop in (out.get("properties") or {}).items():
        if name in FORCED_NONEMPTY_FIELDS and prop.get("type") == "array":
            prop["minItems"] = max(1, int(prop.get("minItems", 1)))

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


def _validation_problem(exc: ValidationError) -> str:
    """``verdicts.0.verdict: Input should be 'yes', 'no' or 'borderline'; score: Field
    required`` — each failing field with pydantic's message (first three)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(loc) for loc in err.get("loc", ())) or "(object)"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def coerce_to_schema(
    text: str, schema: type[SchemaT], *, score_range: tuple[float, float] | None = None
) -> tuple[SchemaT, bool]:
    """Parse ``text`` into ``schema``: extract (repairing a cut-off object), clamp, validate.

    Returns the instance and whether the JSON had to be repaired. Raises
    :class:`JudgeOutputError` when no instance can honestly be made: no JSON object, a required
    field missing or invalid (a verdict outside the schema's values included), or an empty list
    in :data:`NONEMPTY_LIST_FIELDS`. Scores are clamped into ``score_range`` before and after
    validation (a score sent as the string ``"15"`` is only a number after validation).
    """
    if "{" not in text:
        raise JudgeOutputError(schema, "no JSON object", text)
    data, repaired = extract_json_object(text)
    if not isinstance(data, dict):
        raise JudgeOutputError(schema, "no readable JSON object", text)
    try:
        instance = schema.model_validate(clamp_scores(data, score_range))
    except ValidationError as exc:
        problem = _validation_problem(exc)
        raise JudgeOutputError(
            schema, f"{'repaired JSON' if repaired else 'JSON'} does not fit: {problem}", text
        ) from None
    if score_range is not None:
        instance = schema.model_validate(clamp_scores(instance.model_dump(), score_range))
    for name in sorted(NONEMPTY_LIST_FIELDS & set(type(instance).model_fields)):
        value = getattr(instance, name)
        if isinstance(value, list) and not value:
            raise JudgeOutputError(
                schema, f"empty {name!r} list (DeepEval would score it as a pass)", text
            )
    return instance, repaired
