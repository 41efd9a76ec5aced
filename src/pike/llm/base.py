"""What every LLM provider returns and raises (docs/architecture.md, "Packages and modules").

Providers fill in tokens and leave the cost at 0: the client prices every attempt from the run's
frozen price table, so a provider never needs to know prices.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

KINDS = ("rate_limit", "server", "timeout", "malformed", "auth", "bad_request", "config")
# Transient by nature: worth another attempt of the same query.
RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout"})


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    model: str
    finish_reason: str
    attempts: int = 1  # set by the client: attempts this query took
    tokens_estimated: bool = False  # the provider reported no usage; chars/4 was used


class LLMError(Exception):
    """A failed LLM request. `kind` is one of KINDS; the client retries the retryable ones.

    A failed attempt that was still billed (usage in an error reply) carries its tokens so the
    client can price it.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown LLMError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.attempts = 0  # filled by the client when it gives up
        self.cost_usd = 0.0  # likewise: what all attempts of the query cost

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __reduce__(self):
        # Picklable despite keyword-only fields, so errors can cross process (Ray) boundaries.
        return _restore, (type(self), self.message, dict(self.__dict__))

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.kind}{status}: {self.message}"


class ConfigError(LLMError):
    """A setup problem (missing key, SDK, unknown model or price): raised before any work starts."""

    def __init__(self, message: str) -> None:
        super().__init__("config", message)

    def __str__(self) -> str:
        return self.message


def _restore(cls: type, message: str, state: dict) -> Exception:
    err = Exception.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


@runtime_checkable
class Provider(Protocol):
    async def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float, timeout: float
    ) -> Completion: ...


def error_for_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> LLMError:
    """Map an HTTP status to an LLMError kind (shared by the SDK-based providers)."""
    if status == 429:
        return LLMError("rate_limit", message, status=status, retry_after=parse_retry_after(headers))
    if status >= 500:
        return LLMError("server", message, status=status, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        return LLMError("auth", message, status=status)
    if status == 408:
        return LLMError("timeout", message, status=status)
    return LLMError("bad_request", message, status=status)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or an HTTP date), if any."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            try:
                value = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(value):
            return max(0.0, value)
    return None


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message; multi-part content keeps only its text parts."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))


def estimate_tokens(text: str) -> int:
    """The usual chars/4 rule: used for reservations and for replies without usage."""
    return math.ceil(len(text) / 4)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    # A few tokens per message for the role and separators.
    return sum(estimate_tokens(message_text(m)) + 4 for m in messages)
