"""A provider's batch API as a round transport (pike.llm.rounds): OpenAI's files + batches endpoints
here; Anthropic's and Gemini's in pike.llm.batch_native.

A round's lines are uploaded as one JSONL file and submitted as one batch; the batch is polled with
a doubling wait until it ends, then its output (and error) files are read. Polling failures that a
retry may cure (rate limits, 5xx, timeouts) wait and poll again: the batch is paid for and keeps
running whatever happens to one poll.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

from .base import ConfigError, LLMError
from .rounds import CHAT_URL, Replies, parse_output

MAX_POLL_S = 600.0
ENDED = ("completed", "expired", "cancelled", "failed")


def batch_transport(model: str, poll_s: float):
    """The transport of ``model``'s batch API; its ``provider`` is the direct provider it uses (or None)."""
    name = model.strip().partition("/")[0]
    if name == "openai":
        from .providers import make_provider

        return OpenAIBatchTransport(make_provider(model), model, poll_s)
    if name in ("anthropic", "gemini"):
        from .batch_native import AnthropicBatchTransport, GeminiBatchTransport

        return (AnthropicBatchTransport if name == "anthropic" else GeminiBatchTransport)(model, poll_s)
    raise ConfigError(f"llm.batch: provider batches are supported for openai/, anthropic/ and gemini/ models, not {model!r}; "
                      "any model can go through file rounds (--llm batch:DIR)")


class OpenAIBatchTransport:
    mode = "openai-batch"

    def __init__(self, provider: Any, model: str, poll_s: float, sleep: Callable | None = None) -> None:
        if poll_s <= 0:
            raise ConfigError(f"llm.batch_poll_s must be positive (seconds), not {poll_s}")
        self.provider, self.model, self.poll_s = provider, model, poll_s
        self._sleep = sleep or asyncio.sleep

    async def _call(self, what: str, fn, *args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped to LLMError (or re-raised as a bug)
            err = self.provider._map_error(exc)
            if isinstance(err, LLMError):
                err.message = f"{what}: {err.message}"
            raise err from exc

    async def submit(self, n: int, lines: list[dict]) -> str:
        client = self.provider._client_for_loop()
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        f = await self._call("batch upload", client.files.create, file=(f"pike-round-{n}.jsonl", data), purpose="batch")
        batch = await self._call("batch create", client.batches.create, input_file_id=f.id, endpoint=CHAT_URL,
                                 completion_window="24h", metadata={"pike_round": str(n)})
        return batch.id

    async def collect(self, n: int, ref: str, status: Callable[[str], None]) -> Replies:
        client = self.provider._client_for_loop()
        wait = self.poll_s
        while True:
            try:
                batch = await self._call(f"batch {ref}", client.batches.retrieve, ref)
            except LLMError as err:
                if not err.retryable:
                    raise
                status(f"poll failed ({err.kind}), again in {wait:.0f} s")
            else:
                counts = batch.request_counts
                done = f" {counts.completed + counts.failed}/{counts.total}" if counts is not None and counts.total else ""
                status(f"{batch.status}{done}")
                if batch.status in ENDED:
                    break
            await self._sleep(wait)
            wait = min(2 * wait, MAX_POLL_S)
        if batch.status == "failed":
            errors = [e.message for e in (batch.errors.data or [])] if batch.errors is not None else []
            raise LLMError("bad_request", f"batch {ref} failed: {'; '.join(e for e in errors if e) or 'no reason given'}")
        replies = Replies()
        for fid in (batch.output_file_id, batch.error_file_id):
            if fid:
                content = await self._call(f"batch {ref} results", client.files.content, fid)
                part = parse_output(content.text, f"batch {ref}", self.model)
                replies.update(part)
                replies.problems += part.problems
        if batch.status != "completed":
            replies.problems.append(f"batch {ref} {batch.status}: requests without a reply count as failed")
        return replies
