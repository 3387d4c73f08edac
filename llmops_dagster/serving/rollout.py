"""Staged rollout of the ``challenger`` bundle: a sticky share of callers, or a shadow.

Modes (``LLMOPS_SERVING_ROLLOUT``):

- ``off``: the champion answers everyone (the default; nothing about a challenger is loaded).
- ``split``: a share ``LLMOPS_SERVING_CHALLENGER_SHARE`` of *callers* gets the challenger's
  answers. Sticky per caller: the caller's place in [0, 1) is a hash of the challenger's version
  and the caller's name, so one person sees one bundle for as long as that challenger is rolled
  out, and a new challenger draws a new sample of callers (not always the same guinea pigs).
- ``shadow``: the champion answers everyone; the challenger answers the same question too, off
  the request path, and its answer is traced (tagged ``shadow``) and logged but never returned.

Why per caller and not per request: a person who asks twice and gets two different assistants
cannot tell which answer to trust, and their feedback would rate a mix. Without a challenger
(no ``challenger`` alias, or it failed to load) everyone gets the champion.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

RolloutMode = Literal["off", "split", "shadow"]
Arm = Literal["champion", "challenger"]
MODES: tuple[RolloutMode, ...] = ("off", "split", "shadow")


class RolloutConfigError(ValueError):
    """A rollout setting that cannot be applied; the message names it."""


@dataclass(frozen=True)
class RolloutPlan:
    mode: RolloutMode = "off"
    share: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RolloutConfigError(
                f"LLMOPS_SERVING_ROLLOUT={self.mode!r}: expected one of {', '.join(MODES)}"
            )
        if not 0.0 <= self.share <= 1.0:
            raise RolloutConfigError(
                f"LLMOPS_SERVING_CHALLENGER_SHARE={self.share}: a share of callers in [0, 1]"
            )

    @property
    def needs_challenger(self) -> bool:
        return self.mode == "shadow" or (self.mode == "split" and self.share > 0)


def caller_position(caller: str, challenger_version: str) -> float:
    """The caller's sticky place in [0, 1) for this challenger."""
    digest = hashlib.sha256(f"{challenger_version}\x00{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_for(plan: RolloutPlan, caller: str, challenger_version: str | None) -> Arm:
    """Which bundle answers ``caller`` (shadow mode: the champion; the shadow is extra)."""
    if plan.mode != "split" or challenger_version is None:
        return "champion"
    return "challenger" if caller_position(caller, challenger_version) < plan.share else "champion"
