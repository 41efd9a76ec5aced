"""Every OpenAI-compatible endpoint (OpenAI, Gemini, OpenRouter, vLLM/SGLang/Ollama) via the `openai` SDK.

The SDK is imported when a provider is built, never at module import: GPU machines that only
evaluate candidates may not have it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from ..base import Completion, ConfigError, LLMError, error_for_status, estimate_prompt_tokens, estimate_tokens

GEMINI_ROOT = "https://generativelanguage.googleapis.com"  # GEMINI_BASE_URL overrides it
GEMINI_URL = GEMINI_ROOT + "/v1beta/openai/"
OPENROUTER_URL = "https://openrouter.ai/api/v1"
# OpenAI's reasoning models reject a non-default temperature and the legacy max_tokens.
_OPENAI_REASONING = re.compile(r"^(o\d|gpt-5)")


def api_key_from_env(names: tuple[str, ...], model: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    alt = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    raise ConfigError(f"model {model!r} needs an API key: set the environment variable {names[0]}{alt}")


def gemini_root() -> str:
    """The Gemini API's root URL (the OpenAI-compatible endpoint and the native batch API are under it)."""
    return (os.environ.get("GEMINI_BASE_URL", "").strip() or GEMINI_ROOT).rstrip("/")


def request_shape(model: str) -> tuple[str, str, bool]:
    """(API model name, token-limit parameter, whether to send a temperature) of a model string, as a
    chat-completions request for it is written (also in batch input files, which need no key)."""
    provider, _, rest = model.strip().partition("/")
    if provider == "openai":
        return rest, "max_completion_tokens", not _OPENAI_REASONING.match(rest)
    if provider == "local":
        rest = rest.partition("@")[0]
    return rest or model, "max_tokens", True


def chat_body(model: str, messages: list[dict], max_tokens: int, temperature: float) -> dict:
    """The JSON body of one chat-completions request for ``model`` (a batch input line's ``body``)."""
    api_model, token_param, send_temperature = request_shape(model)
    body: dict[str, Any] = {"model": api_model, "messages": messages, token_param: max_tokens}
    if send_temperature:
        body["temperature"] = temperature
    return body


def make_openai_compatible(provider: str, rest: str, model: str, **opts: Any) -> OpenAICompatProvider:
    """Build the provider for `<provider>/<rest>`; opts: api_key, base_url (override), headers."""
    api_key, base_url = opts.pop("api_key", None), opts.pop("base_url", None)
    token_param, send_temperature = "max_tokens", True
    if provider == "openai":
        api_key = api_key or api_key_from_env(("OPENAI_API_KEY",), model)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        token_param = "max_completion_tokens"
        send_temperature = not _OPENAI_REASONING.match(rest)
    elif provider == "gemini":
        api_key = api_key or api_key_from_env(("GEMINI_API_KEY", "GOOGLE_API_KEY"), model)
        base_url = base_url or gemini_root() + "/v1beta/openai/"
    elif provider == "openrouter":
        api_key = api_key or api_key_from_env(("OPENROUTER_API_KEY",), model)
        base_url = base_url or OPENROUTER_URL
        opts.setdefault("headers", {"X-Title": "PIKE"})
    elif provider == "local":
        rest, _, url = rest.partition("@")
        base_url = base_url or url or os.environ.get("LOCAL_BASE_URL", "")
        if not rest or not base_url:
            raise ConfigError(f"expected 'local/<model>@<base_url>' (e.g. local/qwen@http://localhost:8000/v1), got {model!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL of {model!r} must start with http:// or https://")
        # Local servers rarely check keys, but the SDK insists on one.
        api_key = api_key or os.environ.get("LOCAL_API_KEY") or "not-needed"
    else:
        raise ConfigError(f"{provider!r} is not an OpenAI-compatible provider")
    return OpenAICompatProvider(
        model, rest, base_url=base_url, api_key=api_key, token_param=token_param,
        send_temperature=send_temperature, **opts,
    )


class OpenAICompatProvider:
    def __init__(
        self,
        model: str,
        api_model: str,
        *,
        base_url: str,
        api_key: str,
        token_param: str = "max_tokens",
        send_temperature: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ConfigError(f"model {model!r} needs the openai SDK: pip install openai") from None
        self._sdk = openai
        self.model, self.api_model = model, api_model
        self.base_url, self._api_key = base_url, api_key
        self.token_param, self.send_temperature = token_param, send_temperature
        self.headers = headers or {}
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> Any:
        # The SDK's connection pool is tied to the loop that first used it; keep one per loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._sdk.AsyncOpenAI(
                api_key=self._api_key, base_url=self.base_url, max_retries=0,  # our client retries
                default_headers=self.headers or None,
            )
            self._client_loop = loop
        return self._client

    async def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float, timeout: float
    ) -> Completion:
        kwargs: dict[str, Any] = {self.token_param: max_tokens}
        if self.send_temperature:
            kwargs["temperature"] = temperature
        t0 = time.monotonic()
        try:
            resp = await self._client_for_loop().chat.completions.create(
                model=self.api_model, messages=messages, timeout=timeout, **kwargs
            )
        except Exception as exc:
            raise self._map_error(exc) from exc
        return self._parse(resp, messages, time.monotonic() - t0)

    def _map_error(self, exc: Exception) -> Exception:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return LLMError("timeout", f"{self.model}: request timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return LLMError("timeout", f"{self.model}: connection failed: {exc.__cause__ or exc}")
        if isinstance(exc, sdk.APIResponseValidationError):
            return LLMError("malformed", f"{self.model}: {exc}", status=exc.status_code)
        if isinstance(exc, sdk.APIStatusError):
            return error_for_status(exc.status_code, f"{self.model}: {_tail(exc.message)}", exc.response.headers)
        if isinstance(exc, ValueError):  # JSON decoding and pydantic validation errors
            return LLMError("malformed", f"{self.model}: unreadable reply: {_tail(str(exc))}")
        if isinstance(exc, sdk.APIError):
            return LLMError("server", f"{self.model}: {_tail(str(exc))}")
        return exc  # a bug, not a provider problem: let it surface

    def _parse(self, resp: Any, messages: list[dict], latency: float) -> Completion:
        if not hasattr(resp, "choices"):  # the SDK hands back raw text when the reply is not JSON
            raise LLMError("malformed", f"{self.model}: not a chat completion: {_tail(str(resp))}")
        usage = getattr(resp, "usage", None)
        in_tok = getattr(usage, "prompt_tokens", None)
        out_tok = getattr(usage, "completion_tokens", None)
        choices = resp.choices or []
        message = getattr(choices[0], "message", None) if choices else None
        if message is None:
            raise LLMError("malformed", f"{self.model}: reply has no choices",
                           input_tokens=in_tok or 0, output_tokens=out_tok or 0)
        content = getattr(message, "content", None)
        text = content if isinstance(content, str) else ""
        estimated = in_tok is None or out_tok is None
        if estimated:
            in_tok = estimate_prompt_tokens(messages) if in_tok is None else in_tok
            out_tok = estimate_tokens(text) if out_tok is None else out_tok
        return Completion(
            text=text, input_tokens=int(in_tok), output_tokens=int(out_tok), cost_usd=0.0,
            latency_s=latency, model=self.model, finish_reason=getattr(choices[0], "finish_reason", None) or "",
            tokens_estimated=estimated,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _tail(text: str, n: int = 500) -> str:
    return text if len(text) <= n else "..." + text[-n:]
