"""Anthropic's Message Batches and Gemini's Batch API as round transports (pike.llm.rounds).

A round arrives as lines of the OpenAI batch input format (chat-completions bodies); each transport
turns them into its provider's own requests, submits them as one batch, polls it with a doubling wait
until it ends and turns the results back into replies by custom_id. Plain HTTP (httpx, which the
openai SDK brings), so neither needs its provider's SDK; keys and base URLs are the direct providers'.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Callable

from .base import Completion, ConfigError, LLMError, error_for_status, message_text
from .providers.anthropic import FINISH as ANTHROPIC_FINISH
from .providers.anthropic import split_system
from .providers.openai_compat import api_key_from_env, gemini_root
from .rounds import Replies, replies_by_id

MAX_POLL_S = 600.0
HTTP_TIMEOUT_S = 120.0  # one request of the batch API (creating a batch uploads the whole round)
ANTHROPIC_ROOT = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}


class HTTPBatchTransport:
    """What both share: the HTTP client, error mapping and the poll loop."""

    mode = ""

    def __init__(self, model: str, poll_s: float, sleep: Callable | None = None) -> None:
        if poll_s <= 0:
            raise ConfigError(f"llm.batch_poll_s must be positive (seconds), not {poll_s}")
        self._httpx = _http_client_module(model)
        self.model, self.poll_s = model, poll_s
        self.provider = None  # every query goes through the batch API: no direct provider
        self._sleep = sleep or asyncio.sleep

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def request(self, what: str, method: str, url: str, body: dict | None = None, text: bool = False) -> Any:
        """One call of the batch API: its JSON (its text with ``text``, for a JSONL download), or an LLMError."""
        try:
            async with self._httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, headers=self.headers()) as client:
                resp = await client.request(method, url, json=body)
        except self._httpx.TimeoutException:
            raise LLMError("timeout", f"{what}: {self.model}: request timed out") from None
        except self._httpx.TransportError as exc:
            raise LLMError("timeout", f"{what}: {self.model}: connection failed: {exc}") from None
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code, f"{what}: {self.model}: HTTP {resp.status_code} {_error_message(resp.text)}",
                                   resp.headers)
        if text:
            return resp.text
        try:
            return resp.json()
        except ValueError:
            raise LLMError("malformed", f"{what}: {self.model}: reply is not JSON: {resp.text[:200]}") from None

    async def poll(self, ref: str, state_of: Callable[[Any], tuple[str, bool]], status: Callable[[str], None]) -> Any:
        """GETs the batch until ``state_of`` says it ended; failures a retry may cure poll again later."""
        wait = self.poll_s
        while True:
            try:
                doc = await self.request(f"batch {ref}", "GET", self.batch_url(ref))
            except LLMError as err:
                if not err.retryable:
                    raise
                status(f"poll failed ({err.kind}), again in {wait:.0f} s")
            else:
                if not isinstance(doc, dict):
                    raise LLMError("malformed", f"batch {ref}: {self.model}: the batch is not a JSON object")
                state, ended = state_of(doc)
                status(state)
                if ended:
                    return doc
            await self._sleep(wait)
            wait = min(2 * wait, MAX_POLL_S)

    def batch_url(self, ref: str) -> str:
        raise NotImplementedError


def _http_client_module(model: str) -> Any:
    # The openai SDK brings httpx (httpx2 in its newer releases; the same client API under another name).
    import importlib

    for name in ("httpx", "httpx2"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigError(f"llm.batch for {model!r} needs httpx: pip install openai (it brings httpx)")


def _error_message(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:300]
    err = doc.get("error") if isinstance(doc, dict) else None
    while isinstance(err, dict) and isinstance(err.get("error"), dict):  # Anthropic nests it
        err = err["error"]
    return str(err.get("message", err)) if isinstance(err, dict) else text[:300]


def _counts(done: int, total: int) -> str:
    return f" {done}/{total}" if total else ""


# -------------------------------------------------------------------- Anthropic


class AnthropicBatchTransport(HTTPBatchTransport):
    """POST /v1/messages/batches, GET /v1/messages/batches/{id}, then the JSONL at its results_url."""

    mode = "anthropic-batch"

    def __init__(self, model: str, poll_s: float, sleep: Callable | None = None) -> None:
        super().__init__(model, poll_s, sleep)
        self._key = api_key_from_env(("ANTHROPIC_API_KEY",), model)
        self.root = (os.environ.get("ANTHROPIC_BASE_URL", "").strip() or ANTHROPIC_ROOT).rstrip("/")

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self._key, "anthropic-version": ANTHROPIC_VERSION}

    def batch_url(self, ref: str) -> str:
        return f"{self.root}/v1/messages/batches/{ref}"

    @staticmethod
    def params(body: dict) -> dict:
        """A chat-completions body as Messages API params (as the direct provider sends them)."""
        system, turns = split_system(body.get("messages", []))
        params: dict[str, Any] = {"model": body["model"], "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
                                  "messages": turns}
        if system:
            params["system"] = system
        if "temperature" in body:
            params["temperature"] = min(max(float(body["temperature"]), 0.0), 1.0)  # Anthropic's range is [0, 1]
        return params

    async def submit(self, n: int, lines: list[dict]) -> str:
        requests = [{"custom_id": line["custom_id"], "params": self.params(line["body"])} for line in lines]
        batch = await self.request("batch create", "POST", f"{self.root}/v1/messages/batches", {"requests": requests})
        if not isinstance(batch, dict) or not batch.get("id"):
            raise LLMError("malformed", f"batch create: {self.model}: no batch id in the reply")
        return batch["id"]

    async def collect(self, n: int, ref: str, status: Callable[[str], None]) -> Replies:
        def state_of(doc: dict) -> tuple[str, bool]:
            state = doc.get("processing_status", "?")
            c = doc.get("request_counts") or {}
            done = sum(int(c.get(k) or 0) for k in ("succeeded", "errored", "canceled", "expired"))
            return state + _counts(done, done + int(c.get("processing") or 0)), state == "ended"

        batch = await self.poll(ref, state_of, status)
        url = batch.get("results_url")
        if not url:
            raise LLMError("malformed", f"batch {ref} ended without a results_url")
        return self.parse_results(await self.request(f"batch {ref} results", "GET", url, text=True), f"batch {ref}")

    def parse_results(self, text: str, where: str) -> Replies:
        return replies_by_id(text, where, lambda line, at: self.parse_result(line.get("result"), at))

    def parse_result(self, result: Any, where: str) -> Completion | LLMError:
        if not isinstance(result, dict):
            return LLMError("malformed", f"{where}: no result object")
        kind = result.get("type")
        if kind == "errored":
            err = result.get("error") or {}
            inner = err.get("error", err) if isinstance(err, dict) else {}
            bad = isinstance(inner, dict) and inner.get("type") == "invalid_request_error"
            message = inner.get("message", inner) if isinstance(inner, dict) else inner
            return LLMError("bad_request" if bad else "server", f"{where}: {message}")
        if kind != "succeeded":  # canceled, expired
            return LLMError("server", f"{where}: request {kind or 'without a result type'}")
        message = result.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
        blocks = message.get("content") if isinstance(message, dict) else None
        if not isinstance(blocks, list) or not isinstance(usage, dict):
            return LLMError("malformed", f"{where}: reply without content or usage")
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        stop = message.get("stop_reason") or ""
        return Completion(text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0), 0.0, 0.0,
                          self.model, ANTHROPIC_FINISH.get(stop, stop))


# -------------------------------------------------------------------- Gemini


GEMINI_ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")


class GeminiBatchTransport(HTTPBatchTransport):
    """POST /v1beta/models/{model}:batchGenerateContent with the round inlined, GET /v1beta/{batch name}
    until it ends, then the inlined responses (each with its request's metadata key)."""

    mode = "gemini-batch"

    def __init__(self, model: str, poll_s: float, sleep: Callable | None = None) -> None:
        super().__init__(model, poll_s, sleep)
        self._key = api_key_from_env(("GEMINI_API_KEY", "GOOGLE_API_KEY"), model)
        self.root = gemini_root()

    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key}

    def batch_url(self, ref: str) -> str:
        return f"{self.root}/v1beta/{ref}"

    @staticmethod
    def generate_request(body: dict) -> dict:
        """A chat-completions body as a GenerateContentRequest."""
        messages = body.get("messages", [])
        system = "\n\n".join(message_text(m) for m in messages if m.get("role") == "system")
        contents = [{"role": "model" if m.get("role") == "assistant" else "user", "parts": [{"text": message_text(m)}]}
                    for m in messages if m.get("role") != "system"]
        config: dict[str, Any] = {"max_output_tokens": body.get("max_tokens") or body.get("max_completion_tokens")}
        if "temperature" in body:
            config["temperature"] = body["temperature"]
        request: dict[str, Any] = {"contents": contents, "generation_config": config}
        if system:
            request["system_instruction"] = {"parts": [{"text": system}]}
        return request

    async def submit(self, n: int, lines: list[dict]) -> str:
        api_model = lines[0]["body"]["model"] if lines else self.model.partition("/")[2]
        requests = [{"request": self.generate_request(line["body"]), "metadata": {"key": line["custom_id"]}} for line in lines]
        batch = {"display_name": f"pike-round-{n}", "input_config": {"requests": {"requests": requests}}}
        op = await self.request("batch create", "POST", f"{self.root}/v1beta/models/{api_model}:batchGenerateContent",
                                {"batch": batch})
        name = (op.get("name") or (op.get("metadata") or {}).get("name")) if isinstance(op, dict) else None
        if not name:
            raise LLMError("malformed", f"batch create: {self.model}: no batch name in the reply")
        return name

    @staticmethod
    def _batch(doc: dict) -> dict:
        # The GET answers a long-running operation whose metadata is the batch (or the batch itself).
        return doc.get("metadata") if isinstance(doc.get("metadata"), dict) else doc

    async def collect(self, n: int, ref: str, status: Callable[[str], None]) -> Replies:
        def state_of(doc: dict) -> tuple[str, bool]:
            batch = self._batch(doc)
            state = str(batch.get("state", "?"))
            short = state.rpartition("_STATE_")[2] if "_STATE_" in state else state
            stats = batch.get("batchStats") or {}
            done = int(stats.get("successfulRequestCount") or 0) + int(stats.get("failedRequestCount") or 0)
            return short.lower() + _counts(done, int(stats.get("requestCount") or 0)), short in GEMINI_ENDED or bool(doc.get("done"))

        doc = await self.poll(ref, state_of, status)
        batch = self._batch(doc)
        state = str(batch.get("state", ""))
        if state.endswith("FAILED") or doc.get("error"):
            reason = (doc.get("error") or {}).get("message") if isinstance(doc.get("error"), dict) else None
            raise LLMError("bad_request", f"batch {ref} failed: {reason or 'no reason given'}")
        output = doc.get("response") if isinstance(doc.get("response"), dict) else batch.get("output") or {}
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
        replies = Replies()
        for i, item in enumerate(inlined):
            key = ((item.get("metadata") or {}).get("key")) if isinstance(item, dict) else None
            if not isinstance(key, str):
                replies.problems.append(f"batch {ref}: response {i} has no metadata key")
                continue
            replies[key] = self.parse_response(item, f"batch {ref} ({key})")
        if not state.endswith("SUCCEEDED"):
            replies.problems.append(f"batch {ref} {state.lower()}: requests without a reply count as failed")
        return replies

    def parse_response(self, item: dict, where: str) -> Completion | LLMError:
        error = item.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            return LLMError("bad_request" if code == 3 or code == 400 else "server", f"{where}: {message}")
        resp = item.get("response")
        if not isinstance(resp, dict):
            return LLMError("malformed", f"{where}: no response")
        usage = resp.get("usageMetadata") if isinstance(resp.get("usageMetadata"), dict) else {}
        in_tok = usage.get("promptTokenCount")
        # Thinking tokens are billed as output.
        out_tok = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
        candidates = resp.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            reason = (resp.get("promptFeedback") or {}).get("blockReason")
            return LLMError("malformed", f"{where}: reply has no candidates" + (f" (blocked: {reason})" if reason else ""),
                            input_tokens=int(in_tok or 0), output_tokens=out_tok)
        parts = (candidates[0].get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        finish = candidates[0].get("finishReason") or ""
        estimated = in_tok is None or "candidatesTokenCount" not in usage
        return Completion(text, int(in_tok or 0), out_tok, 0.0, 0.0, self.model, GEMINI_FINISH.get(finish, finish.lower()),
                          tokens_estimated=estimated)
