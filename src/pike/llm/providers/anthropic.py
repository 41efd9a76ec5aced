"""Claude through the optional `anthropic` SDK (pip install 'pike-evolve[anthropic]')."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

from ..base import Completion, ConfigError, LLMError, error_for_status, message_text
from .openai_compat import api_key_from_env

INSTALL_HINT = "pip install 'pike-evolve[anthropic]'"
# Anthropic's stop reasons, in the chat-completions vocabulary the rest of PIKE uses.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def split_system(messages: list[dict]) -> tuple[str, list[dict]]:
    """Chat messages as the Messages API takes them: the system prompt apart from the turns."""
    system = "\n\n".join(message_text(m) for m in messages if m.get("role") == "system")
    turns = [{"role": m["role"], "content": message_text(m)} for m in messages if m.get("role") != "system"]
    return system, turns


class AnthropicProvider:
    def __init__(self, model: str, api_model: str, *, api_key: str | None = None,
                 base_url: str | None = None) -> None:
        try:
            import anthropic
        except ImportError:
            raise ConfigError(f"model {model!r} needs the anthropic SDK: {INSTALL_HINT}") from None
        self._sdk = anthropic
        self.takes_temperature = _takes_temperature(anthropic)
        self.model, self.api_model = model, api_model
        self._api_key = api_key or api_key_from_env(("ANTHROPIC_API_KEY",), model)
        self.base_url = base_url
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._sdk.AsyncAnthropic(api_key=self._api_key, base_url=self.base_url, max_retries=0)
            self._client_loop = loop
        return self._client

    async def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float, timeout: float
    ) -> Completion:
        system, turns = split_system(messages)
        kwargs: dict[str, Any] = {"system": system} if system else {}
        if self.takes_temperature:
            kwargs["temperature"] = min(max(temperature, 0.0), 1.0)  # Anthropic's range is [0, 1]
        t0 = time.monotonic()
        try:
            resp = await self._client_for_loop().messages.create(
                model=self.api_model, messages=turns, max_tokens=max_tokens, timeout=timeout, **kwargs,
            )
        except Exception as exc:
            raise self._map_error(exc) from exc
        blocks = getattr(resp, "content", None)
        usage = getattr(resp, "usage", None)
        if blocks is None or usage is None:
            raise LLMError("malformed", f"{self.model}: reply without content or usage")
        text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", "") == "text")
        return Completion(
            text=text, input_tokens=int(usage.input_tokens or 0), output_tokens=int(usage.output_tokens or 0),
            cost_usd=0.0, latency_s=time.monotonic() - t0, model=self.model,
            finish_reason=FINISH.get(resp.stop_reason or "", resp.stop_reason or ""),
        )

    def _map_error(self, exc: Exception) -> Exception:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return LLMError("timeout", f"{self.model}: request timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return LLMError("timeout", f"{self.model}: connection failed: {exc.__cause__ or exc}")
        if isinstance(exc, sdk.APIStatusError):  # 529 "overloaded" lands in server, retryable
            return error_for_status(exc.status_code, f"{self.model}: {exc.message}", exc.response.headers)
        if isinstance(exc, (ValueError, sdk.APIResponseValidationError)):
            return LLMError("malformed", f"{self.model}: unreadable reply: {exc}")
        if isinstance(exc, sdk.APIError):
            return LLMError("server", f"{self.model}: {exc}")
        return exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _takes_temperature(sdk: Any) -> bool:
    # Newer SDKs (and the API behind them) dropped sampling parameters; older ones take them.
    try:
        return "temperature" in inspect.signature(sdk.resources.messages.AsyncMessages.create).parameters
    except (AttributeError, TypeError, ValueError):
        return True
