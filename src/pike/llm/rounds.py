"""Batch rounds: the queries a search has open at one moment go out together, as one batch.

One code path for both batch modes. The client hands each query to :class:`Rounds` instead of a
provider; when nothing else in the run is working (no evaluation in flight, no new query for a
moment), the queries waiting form a round, which a *transport* sends:

* :class:`FileTransport` (``--llm batch:DIR``) writes ``DIR/round-<n>.requests.jsonl`` in the OpenAI
  batch input format and stops the run (:class:`RoundDeferred`); ``pike optimize --resume`` reads
  ``DIR/round-<n>.responses.jsonl`` (the OpenAI batch output format) and goes on.
* :class:`~pike.llm.batch_api.OpenAIBatchTransport` (``llm.batch = true``) uploads the same lines to
  the provider's batch API and polls it until the replies are there.

A round and its queries are in the store (``rounds`` and ``exchanges.batch_round``) before anything
is sent, so a run killed while a round is out resumes by *claiming* its queries back: the search asks
the same queries again (same task, role, phase, slot) and gets the round's replies, never paying twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from .base import Completion, LLMError, estimate_prompt_tokens, estimate_tokens

SETTLE_S = 0.1  # the run must stay idle this long before a round goes out
CHAT_URL = "/v1/chat/completions"


class RoundDeferred(BaseException):
    """A file round was written: the run stops here until its replies are placed beside it.

    A BaseException so that no search code catching Exception mistakes it for a failed task."""

    def __init__(self, round_n: int, requests: Path, responses: Path, count: int) -> None:
        super().__init__(f"round {round_n}: {count} requests in {requests}")
        self.round_n, self.requests, self.responses, self.count = round_n, requests, responses, count


class RoundLog(Protocol):
    """Where rounds are kept (the run's store implements it)."""

    def add_round(self, mode: str, exchange_ids: list[int]) -> int: ...

    def set_round(self, n: int, **fields: Any) -> None: ...

    def round(self, n: int) -> dict | None: ...


class Transport(Protocol):
    mode: str

    async def submit(self, n: int, lines: list[dict]) -> str:
        """Send round ``n``; returns its reference (a file path, a batch id)."""

    async def collect(self, n: int, ref: str, status: Callable[[str], None]) -> dict[str, Completion | LLMError]:
        """The replies of round ``n`` by custom_id, once all are in (``status`` reports progress)."""


@dataclass
class _Request:
    custom_id: str
    line: dict
    future: asyncio.Future


def custom_id(exchange_id: int) -> str:
    return f"exchange-{exchange_id}"


def request_line(cid: str, body: dict) -> dict:
    """One line of the OpenAI batch input format."""
    return {"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body}


class Rounds:
    """Collects queries into rounds and hands each its reply (see the module doc)."""

    def __init__(self, transport: Transport, log: RoundLog, busy: Callable[[], int] = lambda: 0,
                 on_status: Callable[[int, str, float, int, list], None] | None = None, settle_s: float = SETTLE_S) -> None:
        self.transport, self.log, self.busy = transport, log, busy
        self.on_status = on_status
        self.settle_s = settle_s
        self.deferred: RoundDeferred | None = None
        self.stopped: asyncio.Event | None = None  # set when a file round stops the run
        self._queue: list[_Request] = []
        self._added = 0
        self._watcher: asyncio.Task | None = None
        self._collecting: dict[int, asyncio.Task] = {}

    # ------------------------------------------------------------ the client's side

    async def send(self, exchange_id: int, body: dict) -> Completion:
        """A new query (already reserved and recorded as ``exchange_id``): goes out with the next round."""
        loop = asyncio.get_running_loop()
        if self.stopped is None:
            self.stopped = asyncio.Event()
        req = _Request(custom_id(exchange_id), request_line(custom_id(exchange_id), body), loop.create_future())
        self._queue.append(req)
        self._added += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch())
        return await self._reply(req.future, body)

    async def claim(self, exchange_id: int, round_n: int, body: dict) -> Completion:
        """A query sent in an earlier invocation's round ``round_n``: its reply from that round."""
        task = self._collecting.get(round_n)
        if task is None:
            task = self._collecting[round_n] = asyncio.ensure_future(self._collect(round_n))
        replies = await asyncio.shield(task)
        return self._answer(replies, custom_id(exchange_id), body)

    async def _reply(self, future: asyncio.Future, body: dict) -> Completion:
        replies, cid = await future
        return self._answer(replies, cid, body)

    @staticmethod
    def _answer(replies: dict, cid: str, body: dict) -> Completion:
        got = replies.get(cid)
        if got is None:
            unread = getattr(replies, "problems", [])
            why = f" ({len(unread)} line(s) unreadable: {unread[0]})" if unread else ""
            raise LLMError("malformed", f"{cid}: no reply for this request in the round's replies{why}")
        if isinstance(got, LLMError):
            raise got
        if got.tokens_estimated:  # no usage in the reply: estimated from the request as a direct call would
            return Completion(got.text, estimate_prompt_tokens(body.get("messages", [])), estimate_tokens(got.text),
                              0.0, got.latency_s, got.model, got.finish_reason, tokens_estimated=True)
        return got

    # ------------------------------------------------------------ rounds

    async def _watch(self) -> None:
        """Sends the queue as a round once the run has been idle for ``settle_s``."""
        while self._queue:
            seen = self._added
            await asyncio.sleep(self.settle_s)
            if self._queue and self._added == seen and self.busy() == 0:
                batch, self._queue = self._queue, []
                try:
                    await self._send_round(batch)
                except Exception as exc:  # noqa: BLE001 - a bug: surfaces in every query of the round, none hangs
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)

    async def _send_round(self, batch: list[_Request]) -> None:
        ids = [int(r.custom_id.split("-")[1]) for r in batch]
        n = self.log.add_round(self.transport.mode, ids)  # before sending: a kill after it loses nothing
        try:
            ref = await self.transport.submit(n, [r.line for r in batch])
        except RoundDeferred as stop:
            self.log.set_round(n, status="written", ref=stop.requests.name, submitted=time.time())
            self.deferred = stop
            assert self.stopped is not None
            self.stopped.set()
            return  # the engine cancels the search; the queries stay pending in the store
        except LLMError as err:
            self.log.set_round(n, status="failed", error=str(err))
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(LLMError(err.kind, f"{r.custom_id}: round {n} not sent: {err.message}"))
            return
        self.log.set_round(n, status="submitted", ref=ref, submitted=time.time())
        self._status(n, "submitted", 0.0, len(batch))
        task = self._collecting[n] = asyncio.ensure_future(self._collect(n))

        def deliver(t: asyncio.Task) -> None:
            for r in batch:
                if r.future.done():
                    continue
                if t.cancelled():
                    r.future.cancel()
                elif t.exception() is not None:
                    r.future.set_exception(t.exception())
                else:
                    r.future.set_result((t.result(), r.custom_id))

        task.add_done_callback(deliver)

    async def _collect(self, n: int) -> dict:
        row = self.log.round(n)
        if row is None or not row.get("ref"):
            raise LLMError("malformed", f"round {n} was never sent (the run stopped while sending it)")
        t0 = row.get("submitted") or time.time()
        count = len(json.loads(row.get("exchanges") or "[]"))

        def status(state: str) -> None:
            self._status(n, state, time.time() - t0, count)

        try:
            replies = await self.transport.collect(n, row["ref"], status)
        except LLMError as err:
            self.log.set_round(n, status="failed", error=str(err))
            raise
        self.log.set_round(n, status="collected", collected=time.time())
        ids = [custom_id(i) for i in json.loads(row.get("exchanges") or "[]")]
        problems = list(getattr(replies, "problems", []))
        problems += [f"{cid}: no reply" for cid in ids if cid not in replies]
        problems += [str(r) for cid, r in replies.items() if isinstance(r, LLMError)]
        self._status(n, "collected", time.time() - t0, count, problems)
        return replies

    def _status(self, n: int, state: str, age_s: float, count: int, problems: list[str] | None = None) -> None:
        if self.on_status is not None:
            self.on_status(n, state, age_s, count, problems or [])

    async def aclose(self) -> None:
        for task in [self._watcher, *self._collecting.values()]:
            if task is not None and not task.done():
                task.cancel()


# -------------------------------------------------------------------- the OpenAI batch formats

class Replies(dict):
    """A round's replies by custom_id, and ``problems``: lines that could not be read at all."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []


def parse_output(text: str, where: str, model: str) -> Replies:
    """Lines of the OpenAI batch output format -> a reply (or the error saying why there is none)
    per custom_id (see ``replies_by_id``)."""
    return replies_by_id(text, where, lambda line, at: parse_output_line(line, at, model))


def replies_by_id(text: str, where: str, parse: Callable[[dict, str], Completion | LLMError]) -> Replies:
    """JSONL of a batch's results -> ``parse(line, where)`` per custom_id. A line that cannot be read
    at all (not JSON, no custom_id) is a problem of the round, named by its line number; the requests
    it may have answered then have no reply."""
    out = Replies()
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as e:
            out.problems.append(f"{where}:{lineno}: not JSON ({e.msg})")
            continue
        cid = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(cid, str):
            out.problems.append(f"{where}:{lineno}: no custom_id")
            continue
        out[cid] = parse(line, f"{where}:{lineno} ({cid})")
    return out


def parse_output_line(line: dict, where: str, model: str) -> Completion | LLMError:
    error = line.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        return LLMError("server", f"{where}: {message}")
    response = line.get("response")
    if not isinstance(response, dict):
        return LLMError("malformed", f"{where}: no response object")
    status = response.get("status_code", 200)
    body = response.get("body")
    if status != 200:
        detail = body.get("error", {}).get("message", "") if isinstance(body, dict) and isinstance(body.get("error"), dict) else ""
        return LLMError("bad_request" if isinstance(status, int) and 400 <= status < 500 else "server",
                        f"{where}: HTTP {status} {detail}".rstrip(), status=status if isinstance(status, int) else None)
    if not isinstance(body, dict):
        return LLMError("malformed", f"{where}: response has no body")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    in_tok, out_tok = usage.get("prompt_tokens"), usage.get("completion_tokens")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return LLMError("malformed", f"{where}: reply has no choices", input_tokens=int(in_tok or 0), output_tokens=int(out_tok or 0))
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return LLMError("malformed", f"{where}: reply has no message content",
                        input_tokens=int(in_tok or 0), output_tokens=int(out_tok or 0))
    estimated = not isinstance(in_tok, int) or not isinstance(out_tok, int)
    return Completion(content, int(in_tok) if isinstance(in_tok, int) else 0, int(out_tok) if isinstance(out_tok, int) else 0,
                      0.0, 0.0, model, choices[0].get("finish_reason") or "", tokens_estimated=estimated)


class FileTransport:
    """Rounds as files in ``directory`` (see the module doc)."""

    mode = "file"

    def __init__(self, directory: Path, model: str) -> None:
        self.directory, self.model = Path(directory), model

    def paths(self, n: int) -> tuple[Path, Path]:
        return self.directory / f"round-{n}.requests.jsonl", self.directory / f"round-{n}.responses.jsonl"

    async def submit(self, n: int, lines: list[dict]) -> str:
        requests, responses = self.paths(n)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = requests.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
        tmp.replace(requests)  # whole or absent: a reader never sees half a round
        raise RoundDeferred(n, requests, responses, len(lines))

    async def collect(self, n: int, ref: str, status: Callable[[str], None]) -> Replies:
        _, responses = self.paths(n)
        if not responses.exists():
            raise LLMError("config", f"round {n}: no replies yet: {responses} does not exist")
        return parse_output(responses.read_text(), responses.name, self.model)

    def waiting(self, n: int) -> bool:
        """Round ``n`` was written and its replies are not there yet."""
        return not self.paths(n)[1].exists()
