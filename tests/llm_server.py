"""A real OpenAI chat-completions server on 127.0.0.1 with scripted replies, for tests.

It also answers POST /v1/messages in the Anthropic format, from the same replies, and three batch APIs:
OpenAI's (POST /v1/files, POST /v1/batches, GET /v1/batches/{id}, GET /v1/files/{id}/content),
Anthropic's (POST /v1/messages/batches, GET /v1/messages/batches/{id} and its /results) and Gemini's
(POST /v1beta/models/{model}:batchGenerateContent with inlined requests, GET /v1beta/batches/{id}).
A batch is answered request by request by the same responder once ``batch_delay`` seconds have passed
since it was created (``hold_batches()`` keeps every batch in progress until ``release_batches()``);
the responder sees Anthropic params as they are and Gemini requests as chat-completions bodies.

    server = FakeLLMServer(lambda req: Reply("hello", prompt_tokens=10, completion_tokens=2)).start()
    make_provider(server.model_string("m"))            # -> local/m@http://127.0.0.1:PORT/v1
    server.script(Reply.error(429, retry_after=0), "ok")  # FIFO, one reply per request
    server.route(lambda req: FIXED if "Traceback" in prompt_text(req) else BROKEN)

A responder gets the request JSON and returns a Reply or a plain string. Every request is kept in
`server.requests` (body, headers, path) for assertions; responder exceptions and an exhausted script
answer HTTP 500 and are kept in `server.errors` so a test can tell a server bug from a client bug.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union


@dataclass
class Reply:
    text: str = ""
    prompt_tokens: int | None = None  # None: len(prompt)/4
    completion_tokens: int | None = None  # None: len(text)/4
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (client timeouts)
    raw_body: bytes | None = None  # sent verbatim (malformed replies)
    content_type: str = "application/json"
    empty_choices: bool = False
    usage: bool = True

    @classmethod
    def error(cls, status: int, message: str = "scripted error", retry_after: float | None = None) -> Reply:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = json.dumps({"error": {"message": message, "type": "scripted", "code": status}}).encode()
        return cls(status=status, headers=headers, raw_body=body)

    @classmethod
    def slow(cls, delay: float, text: str = "late") -> Reply:
        return cls(text, delay=delay)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(raw_body=b'{"id": "x", "choices": [ {"message": ')

    @classmethod
    def no_choices(cls, prompt_tokens: int = 0, completion_tokens: int = 0) -> Reply:
        return cls(empty_choices=True, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


JSON = {"Content-Type": "application/json"}
Responder = Callable[[dict], Union[Reply, str]]


def prompt_text(request: dict) -> str:
    """All message contents of a request, joined: handy for routing by prompt content."""
    system = request.get("system")  # Anthropic's separate system prompt
    parts = [system if isinstance(system, str) else ""] + [_content(m) for m in request.get("messages", [])]
    return "\n".join(p for p in parts if p)


def last_user_message(request: dict) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return _content(users[-1]) if users else ""


def _content(message: dict) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


class FakeLLMServer:
    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda req: Reply("ok"))
        self.requests: list[dict] = []  # {"path", "headers", "body"} per request, in arrival order
        self.errors: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.files: dict[str, bytes] = {}  # uploaded and result files by id
        self.batches: dict[str, dict] = {}  # batch objects by id, in creation order
        self.batch_delay = 0.0
        self.poll_failures = 0  # this many GETs of a batch answer HTTP 503 first
        self._held = False

    def hold_batches(self) -> None:
        self._held = True

    def release_batches(self) -> None:
        self._held = False

    # --- scripting ------------------------------------------------------------------------------
    def route(self, responder: Responder) -> None:
        self.responder = responder

    def script(self, *replies: Reply | str) -> None:
        """Answer requests with these replies, in order; further requests get HTTP 500."""
        queue = deque(replies)
        lock = threading.Lock()

        def next_reply(_req: dict) -> Reply | str:
            with lock:
                if not queue:
                    raise RuntimeError("llm_server: script exhausted")
                return queue.popleft()

        self.responder = next_reply

    @property
    def bodies(self) -> list[dict]:
        """Request JSON bodies, in arrival order."""
        return [r["body"] for r in self.requests]

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """Without /v1: what the anthropic SDK takes as base_url."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def model_string(self, name: str = "test-model") -> str:
        return f"local/{name}@{self.base_url}"

    def start(self) -> FakeLLMServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="llm_server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on a delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- serving (handler threads) --------------------------------------------------------------
    def _answer(self, path: str, headers: dict, body: dict) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            try:
                reply = self.responder(body)
            except Exception as exc:  # noqa: BLE001 - reported to the test through .errors
                self.errors.append(repr(exc))
                return 500, JSON, json.dumps({"error": {"message": repr(exc)}}).encode()
            if isinstance(reply, str):
                reply = Reply(reply)
            if reply.delay:
                self._stopping.wait(reply.delay)
            render = _render_anthropic if path.rstrip("/").endswith("/messages") else _render
            return reply.status, {"Content-Type": reply.content_type, **reply.headers}, render(reply, body)
        finally:
            with self._lock:
                self.in_flight -= 1


    # --- the batch API (handler threads) ----------------------------------------------------------
    def _upload(self, headers: dict, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        import email.parser

        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        data, purpose, name = None, "", "upload.jsonl"
        for part in msg.get_payload() if msg.is_multipart() else []:
            field = part.get_param("name", header="content-disposition")
            if field == "file":
                data, name = part.get_payload(decode=True), part.get_filename() or name
            elif field == "purpose":
                purpose = part.get_payload(decode=True).decode()
        if data is None:
            return 400, JSON, b'{"error": {"message": "no file in the upload"}}'
        with self._lock:
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = data
            self.requests.append({"path": "/v1/files", "headers": headers, "body": {"purpose": purpose, "id": fid}})
        return 200, JSON, json.dumps(_file_object(fid, name, purpose, len(data))).encode()

    def _create_batch(self, headers: dict, body: dict) -> tuple[int, dict[str, str], bytes]:
        if body.get("input_file_id") not in self.files:
            return 404, JSON, b'{"error": {"message": "no such input file"}}'
        with self._lock:
            bid = f"batch_{len(self.batches) + 1}"
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body.get("endpoint", ""), "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                "status": "in_progress", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
                "_t0": time.monotonic(), "_kind": "openai", "_done": False,
            }
            self.requests.append({"path": "/v1/batches", "headers": headers, "body": body})
        return 200, JSON, json.dumps(_public(self.batches[bid])).encode()

    def _retrieve_batch(self, bid: str) -> tuple[int, dict[str, str], bytes]:
        batch = self.batches.get(bid)
        if batch is None:
            return 404, JSON, b'{"error": {"message": "no such batch"}}'
        with self._lock:
            if self.poll_failures > 0:
                self.poll_failures -= 1
                return 503, JSON, b'{"error": {"code": 503, "message": "scripted outage"}}'
            due = not self._held and time.monotonic() - batch["_t0"] >= self.batch_delay
            if due and not batch["_done"]:
                {"openai": self._run_batch, "anthropic": self._run_anthropic_batch, "gemini": self._run_gemini_batch}[batch["_kind"]](batch)
                batch["_done"] = True
        return 200, JSON, json.dumps(_public(batch)).encode()

    def _new_batch(self, kind: str, bid: str, doc: dict, requests: list) -> dict:
        """Keeps a new batch (under the lock): ``doc`` is what GET answers, the rest (``_...``) the server's."""
        doc.update(_kind=kind, _t0=time.monotonic(), _done=False, _requests=requests or [])
        self.batches[bid] = doc
        return doc

    # Anthropic's Message Batches
    def _create_anthropic_batch(self, headers: dict, body: dict) -> tuple[int, dict[str, str], bytes]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, JSON, b'{"type": "error", "error": {"type": "invalid_request_error", "message": "no requests"}}'
        with self._lock:
            bid = f"msgbatch_{len(self.batches) + 1}"
            batch = self._new_batch("anthropic", bid, {
                "id": bid, "type": "message_batch", "processing_status": "in_progress", "results_url": None,
                "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            }, requests)
            self.requests.append({"path": "/v1/messages/batches", "headers": headers, "body": body})
        return 200, JSON, json.dumps(_public(batch)).encode()

    def _run_anthropic_batch(self, batch: dict) -> None:
        lines, counts = [], {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for req in batch["_requests"]:
            self.requests.append({"path": "batch:/v1/messages", "headers": {}, "body": req["params"]})
            try:
                reply = self.responder(req["params"])
                reply = Reply(reply) if isinstance(reply, str) else reply
                error = _error_text(reply) if reply.status != 200 else None
            except Exception as exc:  # noqa: BLE001
                self.errors.append(repr(exc))
                error = repr(exc)
            if error is None:
                result = {"type": "succeeded", "message": json.loads(_render_anthropic(reply, req["params"]))}
            else:
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": error}}}
            counts[result["type"]] += 1
            lines.append({"custom_id": req["custom_id"], "result": result})
        batch["_results"] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        batch.update(processing_status="ended", request_counts=counts,
                     results_url=f"{self.root_url}/v1/messages/batches/{batch['id']}/results")

    def _anthropic_results(self, bid: str) -> tuple[int, dict[str, str], bytes]:
        batch = self.batches.get(bid)
        if batch is None or "_results" not in batch:
            return 404, JSON, b'{"type": "error", "error": {"type": "not_found_error", "message": "no results"}}'
        return 200, {"Content-Type": "application/x-jsonl"}, batch["_results"]  # JSONL, not one JSON document

    # Gemini's Batch API (inlined requests)
    def _create_gemini_batch(self, path: str, headers: dict, body: dict) -> tuple[int, dict[str, str], bytes]:
        model = path.rpartition("/models/")[2].partition(":")[0]
        try:
            requests = body["batch"]["input_config"]["requests"]["requests"]
        except (KeyError, TypeError):
            return 400, JSON, b'{"error": {"code": 400, "message": "no inlined requests", "status": "INVALID_ARGUMENT"}}'
        with self._lock:
            bid = f"g{len(self.batches) + 1}"
            name = f"batches/{bid}"
            batch = self._new_batch("gemini", bid, {"name": name, "metadata": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch", "name": name,
                "model": f"models/{model}", "displayName": body["batch"].get("display_name", ""), "state": "BATCH_STATE_PENDING",
                "batchStats": {"requestCount": str(len(requests)), "pendingRequestCount": str(len(requests))}}}, requests)
            batch["_model"] = model
            self.requests.append({"path": path, "headers": headers, "body": body})
        return 200, JSON, json.dumps(_public(batch)).encode()

    def _run_gemini_batch(self, batch: dict) -> None:
        out, ok = [], 0
        for item in batch["_requests"]:
            request = item["request"]
            self.requests.append({"path": "batch:generateContent", "headers": {}, "body": request})
            chat = chat_from_gemini(batch["_model"], request)
            try:
                reply = self.responder(chat)
                reply = Reply(reply) if isinstance(reply, str) else reply
                error = {"code": reply.status, "message": _error_text(reply)} if reply.status != 200 else None
            except Exception as exc:  # noqa: BLE001
                self.errors.append(repr(exc))
                error = {"code": 500, "message": repr(exc)}
            if error is None:
                ok += 1
                out.append({"response": _render_gemini(reply, chat), "metadata": item.get("metadata", {})})
            else:
                out.append({"error": error, "metadata": item.get("metadata", {})})
        n = len(out)
        batch["metadata"].update(state="BATCH_STATE_SUCCEEDED", batchStats={
            "requestCount": str(n), "successfulRequestCount": str(ok), "failedRequestCount": str(n - ok)})
        batch["done"] = True
        batch["response"] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                             "inlinedResponses": {"inlinedResponses": out}}

    def _run_batch(self, batch: dict) -> None:
        """Answers every line of the batch's input with the responder (under the lock)."""
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        for line in lines:
            self.requests.append({"path": "batch:" + line["url"], "headers": {}, "body": line["body"]})
        out, errors = batch_output(lines, self.responder, self.errors)
        for key, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = fid
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}

    def _file_content(self, fid: str) -> tuple[int, dict[str, str], bytes]:
        if fid not in self.files:
            return 404, JSON, b'{"error": {"message": "no such file"}}'
        return 200, {"Content-Type": "application/octet-stream"}, self.files[fid]


def batch_output(lines: list[dict], responder: Responder, problems: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Lines of the OpenAI batch input format answered by ``responder``: (output lines, error lines)
    in the OpenAI batch output format. Also how a test answers a file round."""
    out, errors = [], []
    for line in lines:
        try:
            reply = responder(line["body"])
        except Exception as exc:  # noqa: BLE001
            if problems is not None:
                problems.append(repr(exc))
            errors.append({"id": f"req_{len(errors)}", "custom_id": line["custom_id"], "response": None,
                           "error": {"code": "server_error", "message": repr(exc)}})
            continue
        reply = Reply(reply) if isinstance(reply, str) else reply
        body = json.loads(_render(reply, line["body"]))
        out.append({"id": f"req_{len(out)}", "custom_id": line["custom_id"], "error": None,
                    "response": {"status_code": reply.status, "request_id": f"r{len(out)}", "body": body}})
    return out, errors


def chat_from_gemini(model: str, request: dict) -> dict:
    """A GenerateContentRequest as the chat-completions body a responder expects."""
    def text(content: dict) -> str:
        return "".join(p.get("text", "") for p in content.get("parts", []))

    messages = [{"role": "system", "content": text(request["system_instruction"])}] if request.get("system_instruction") else []
    messages += [{"role": "assistant" if c.get("role") == "model" else "user", "content": text(c)} for c in request.get("contents", [])]
    config = request.get("generation_config") or {}
    return {"model": model, "messages": messages, "max_tokens": config.get("max_output_tokens"),
            **({"temperature": config["temperature"]} if "temperature" in config else {})}


def _error_text(reply: Reply) -> str:
    try:
        return json.loads(reply.raw_body or b"{}")["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {reply.status}"


def _render_gemini(reply: Reply, request: dict) -> dict:
    """The same Reply as a GenerateContentResponse."""
    prompt = prompt_text(request)
    p = reply.prompt_tokens if reply.prompt_tokens is not None else len(prompt) // 4
    c = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text) // 4
    body: dict[str, Any] = {"candidates": [] if reply.empty_choices else [{
        "content": {"role": "model", "parts": [{"text": reply.text}]},
        "finishReason": {"stop": "STOP", "length": "MAX_TOKENS"}.get(reply.finish_reason, reply.finish_reason.upper()), "index": 0}],
        "modelVersion": request.get("model", "")}
    if reply.usage:
        body["usageMetadata"] = {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c}
    return body


def _file_object(fid: str, name: str, purpose: str, size: int) -> dict:
    return {"id": fid, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": name,
            "purpose": purpose, "status": "processed"}


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _render(reply: Reply, request: dict) -> bytes:
    if reply.raw_body is not None:
        return reply.raw_body
    prompt = prompt_text(request)
    body: dict[str, Any] = {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [] if reply.empty_choices else [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason,
        }],
    }
    if reply.usage:
        p = reply.prompt_tokens if reply.prompt_tokens is not None else len(prompt) // 4
        c = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text) // 4
        body["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    return json.dumps(body).encode()


def _render_anthropic(reply: Reply, request: dict) -> bytes:
    """The same Reply in the Anthropic Messages format (POST /v1/messages)."""
    if reply.raw_body is not None:
        return reply.raw_body
    prompt = prompt_text(request)
    body: dict[str, Any] = {
        "id": f"msg_{time.monotonic_ns()}", "type": "message", "role": "assistant",
        "model": request.get("model", ""),
        "content": [] if reply.empty_choices else [{"type": "text", "text": reply.text}],
        "stop_reason": {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish_reason, reply.finish_reason),
        "stop_sequence": None,
    }
    p = reply.prompt_tokens if reply.prompt_tokens is not None else len(prompt) // 4
    c = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text) // 4
    body["usage"] = {"input_tokens": p, "output_tokens": c}
    return json.dumps(body).encode()


def _handler_for(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            path = self.path.rstrip("/")
            if path.endswith("/v1/files"):
                return self._send(*server._upload(dict(self.headers), raw))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return self._send(400, JSON, b'{"error": {"message": "request is not JSON"}}')
            if path.endswith("/v1/messages/batches"):
                return self._send(*server._create_anthropic_batch(dict(self.headers), body))
            if path.endswith(":batchGenerateContent"):
                return self._send(*server._create_gemini_batch(path, dict(self.headers), body))
            if path.endswith("/v1/batches"):
                return self._send(*server._create_batch(dict(self.headers), body))
            if not self.path.rstrip("/").endswith(("/chat/completions", "/messages")):
                return self._send(404, JSON, b'{"error": {"message": "unknown path"}}')
            self._send(*server._answer(self.path, dict(self.headers), body))

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/").endswith("/models"):
                return self._send(200, JSON, b'{"object": "list", "data": []}')
            parts = self.path.rstrip("/").split("/")
            if len(parts) >= 3 and parts[-3] == "batches" and parts[-1] == "results":
                return self._send(*server._anthropic_results(parts[-2]))
            if len(parts) >= 2 and parts[-2] == "batches":
                return self._send(*server._retrieve_batch(parts[-1]))
            if len(parts) >= 3 and parts[-3] == "files" and parts[-1] == "content":
                return self._send(*server._file_content(parts[-2]))
            self._send(404, JSON, b'{"error": {"message": "unknown path"}}')

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to tell it

        def log_message(self, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler
