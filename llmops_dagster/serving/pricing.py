"""What an answer cost: a price table per remote model, zero for models run in this process.

The table is JSON ``{"model id": {"input_per_1m": 0.15, "output_per_1m": 0.6}}`` in USD per
million tokens (how OpenAI-compatible providers publish prices). A local model has no per-token
price; a remote model missing from the table has an *unknown* cost (``None``), which is reported
as such rather than as a misleading zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class PriceTableError(ValueError):
    """The price table file is missing or malformed."""


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        if path is None:
            return cls({})
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PriceTableError(
                f"price table {path} does not exist (LLMOPS_PRICE_TABLE)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise PriceTableError(f"price table {path} is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise PriceTableError(f"price table {path} must be an object of model id → prices")
        prices: dict[str, Price] = {}
        for model, entry in raw.items():
            try:
                prices[model] = Price(float(entry["input_per_1m"]), float(entry["output_per_1m"]))
            except (TypeError, KeyError, ValueError) as exc:
                raise PriceTableError(
                    f"price table {path}: {model!r} needs numeric input_per_1m and output_per_1m"
                ) from exc
        return cls(prices)

    def cost(
        self, model_id: str, prompt_tokens: int, completion_tokens: int, *, local: bool
    ) -> float | None:
        """USD for one answer; 0 for a local model, ``None`` for an unpriced remote one."""
        if local:
            return 0.0
        price = self.prices.get(model_id)
        return None if price is None else round(price.cost(prompt_tokens, completion_tokens), 8)
