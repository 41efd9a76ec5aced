"""Batch rounds (pike.llm.rounds): file rounds (`--llm batch:DIR`) and provider batches (`llm.batch`).

Unit tests drive the real LLMClient, Store and transports; the end-to-end tests run `pike optimize`
against the local scripted server (its OpenAI batch endpoints) and answer file rounds with the same
scripted replies."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_server import FakeLLMServer, Reply, batch_output, last_user_message
from scripted import FUSED, TASK, fenced
from pike.llm.base import LLMError
from pike.llm.budget import Budget, BudgetGroup
from pike.llm.client import LLMClient
from pike.llm.pricing import PriceRow, PriceTable
from pike.llm.providers.openai_compat import chat_body
from pike.llm.rounds import FileTransport, RoundDeferred, Rounds, parse_output
from pike.store import Store, StoreRecorder

MODEL = "openai/scripted"
NATIVE = ("anthropic/claude-scripted", "gemini/gemini-scripted")  # the batch APIs of pike.llm.batch_native
PRICES = PriceTable([PriceRow(m, 1.0, 4.0) for m in (MODEL, *NATIVE)])


def reply_line(cid: str, text: str, prompt_tokens: int = 100, completion_tokens: int = 50) -> dict:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}
    return {"id": "req", "custom_id": cid, "response": {"status_code": 200, "body": body}, "error": None}


def test_output_format_is_read_per_custom_id():
    lines = [
        json.dumps(reply_line("exchange-1", "fine")),
        json.dumps({"custom_id": "exchange-2", "response": None, "error": {"code": "x", "message": "model overloaded"}}),
        json.dumps({"custom_id": "exchange-3", "response": {"status_code": 200, "body": {"choices": []}}}),
        "{not json",
        json.dumps({"custom_id": "exchange-5", "response": {"status_code": 400, "body": {"error": {"message": "too long"}}}}),
        json.dumps({"response": {}}),
    ]
    got = parse_output("\n".join(lines), "round-1.responses.jsonl", MODEL)
    assert got["exchange-1"].text == "fine" and got["exchange-1"].input_tokens == 100
    assert isinstance(got["exchange-2"], LLMError) and "model overloaded" in str(got["exchange-2"])
    assert isinstance(got["exchange-3"], LLMError) and "exchange-3" in str(got["exchange-3"]) and "no choices" in str(got["exchange-3"])
    assert got["exchange-5"].kind == "bad_request" and "too long" in str(got["exchange-5"])
    assert got.problems == ["round-1.responses.jsonl:4: not JSON (Expecting property name enclosed in double quotes)",
                            "round-1.responses.jsonl:6: no custom_id"]


class Setup:
    """One invocation: a store, a client whose queries go out in rounds, and three places to ask from."""

    def __init__(self, path: Path, transport, max_queries: int = 10, model: str = MODEL):
        self.store = Store(path / "run.db")
        spent, usd = self.store.spent(outside_rounds=True)
        self.budget = Budget(max_queries=max_queries, spent_queries=spent)
        self.rounds = Rounds(transport, self.store, settle_s=0.01)
        self.client = LLMClient(None, model, PRICES, Budget(), rounds=self.rounds, price_scale=0.5,
                                request_body=lambda m, t, temp: chat_body(model, m, t, temp), max_tokens=100)

    async def ask(self, slot: int):
        rec = StoreRecorder(self.store, {"task_id": 1, "phase": 0, "branch": slot})
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"slot {slot}"}]
        return await self.client.ask("coa", messages, budget=BudgetGroup(self.budget), recorder=rec)

    async def ask_all(self, n: int = 3):
        return await asyncio.gather(*(self.ask(i) for i in range(n)), return_exceptions=True)


async def stop_at_round(setup: Setup, n: int = 3) -> RoundDeferred:
    """As the engine does: the askers are cancelled once a file round is written."""
    setup.rounds.stopped = asyncio.Event()
    search = asyncio.ensure_future(setup.ask_all(n))
    await setup.rounds.stopped.wait()
    search.cancel()
    with pytest.raises(asyncio.CancelledError):
        await search
    return setup.rounds.deferred


def test_file_round_written_then_claimed_back_with_per_request_errors(tmp_path):
    first = Setup(tmp_path, FileTransport(tmp_path / "batch", MODEL))
    deferred = asyncio.run(stop_at_round(first))
    assert deferred.round_n == 1 and deferred.count == 3
    lines = [json.loads(x) for x in deferred.requests.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["exchange-1", "exchange-2", "exchange-3"]
    assert all(x["url"] == "/v1/chat/completions" and x["body"]["model"] == "scripted" for x in lines)
    assert lines[0]["body"]["max_completion_tokens"] == 100
    rows = first.store.exchanges()
    assert [r["status"] for r in rows] == ["pending"] * 3 and {r["batch_round"] for r in rows} == {1}
    assert first.store.round(1)["status"] == "written"
    first.store.close()

    # The replies: one good, one without choices, one missing; a line that is not JSON.
    deferred.responses.write_text("\n".join([json.dumps(reply_line("exchange-1", "code one")),
                                             json.dumps({"custom_id": "exchange-2", "response": {"status_code": 200, "body": {}}}),
                                             "garbage"]) + "\n")
    again = Setup(tmp_path, FileTransport(tmp_path / "batch", MODEL))
    assert again.budget.queries_used == 0  # the round's queries are counted when claimed, not before
    got = asyncio.run(again.ask_all())
    assert got[0].text == "code one" and got[0].cost_usd == pytest.approx((100 * 1.0 + 50 * 4.0) / 1e6 * 0.5)
    assert isinstance(got[1], LLMError) and "exchange-2" in str(got[1]) and "no choices" in str(got[1])
    assert isinstance(got[2], LLMError) and "exchange-3: no reply" in str(got[2]) and "garbage" not in str(got[2])
    assert ":3: not JSON" in str(got[2])  # the unreadable line is named where a reply is missing
    assert again.budget.queries_used == 3
    rows = again.store.exchanges()
    assert len(rows) == 3  # claimed, not asked again
    assert [r["status"] for r in rows] == ["done", "failed", "failed"]
    assert "exchange-3" in rows[2]["error"] and again.store.round(1)["status"] == "collected"


def test_waiting_for_replies_claims_nothing(tmp_path):
    first = Setup(tmp_path, FileTransport(tmp_path / "batch", MODEL))
    asyncio.run(stop_at_round(first, 2))
    assert FileTransport(tmp_path / "batch", MODEL).waiting(1)
    first.store.close()
    again = Setup(tmp_path, FileTransport(tmp_path / "batch", MODEL))
    got = asyncio.run(again.ask_all(2))
    assert all(isinstance(g, LLMError) and "does not exist" in str(g) for g in got)


@pytest.fixture
def openai_server(monkeypatch):
    def responder(body):
        return Reply("re: " + last_user_message(body), prompt_tokens=100, completion_tokens=50)

    with FakeLLMServer(responder) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield server


def api_setup(tmp_path, model: str = MODEL):
    from pike.llm.batch_api import batch_transport

    transport = batch_transport(model, 0.02)
    setup = Setup(tmp_path, transport, model=model)
    setup.client.provider = transport.provider
    return setup


def test_provider_batch_sends_a_round_as_one_batch(tmp_path, openai_server):
    setup = api_setup(tmp_path)

    async def go():
        try:
            return await setup.ask_all(4)
        finally:
            await setup.client.aclose()

    got = asyncio.run(go())
    assert [g.text for g in got] == [f"re: slot {i}" for i in range(4)]
    assert len(openai_server.batches) == 1 and not openai_server.errors
    assert not [r for r in openai_server.requests if r["path"] == "/v1/chat/completions"]  # nothing sent directly
    assert all(r["status"] == "done" and r["cost_usd"] == pytest.approx(0.00015) for r in setup.store.exchanges())
    assert setup.store.round(1)["status"] == "collected" and setup.store.round(1)["ref"] == "batch_1"


def test_provider_batch_killed_in_flight_is_collected_not_sent_again(tmp_path, openai_server):
    openai_server.hold_batches()
    first = api_setup(tmp_path)

    async def kill_after_submit():
        search = asyncio.ensure_future(first.ask_all(3))
        while (first.store.round(1) or {}).get("status") != "submitted":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a few polls: still in progress
        search.cancel()
        with pytest.raises(asyncio.CancelledError):
            await search
        await first.client.aclose()

    asyncio.run(kill_after_submit())
    assert [r["status"] for r in first.store.exchanges()] == ["pending"] * 3
    first.store.close()
    openai_server.release_batches()
    again = api_setup(tmp_path)

    async def resume():
        try:
            return await again.ask_all(3)
        finally:
            await again.client.aclose()

    got = asyncio.run(resume())
    assert [g.text for g in got] == [f"re: slot {i}" for i in range(3)]
    assert len(openai_server.batches) == 1  # collected, not submitted again
    assert sum(r["path"].startswith("batch:") for r in openai_server.requests) == 3  # each answered once
    assert len(again.store.exchanges()) == 3 and again.budget.queries_used == 3


@pytest.fixture(params=NATIVE, ids=["anthropic", "gemini"])
def native(request, monkeypatch):
    """(model, server): the scripted server as Anthropic's or Gemini's API, for the model's batch transport."""
    def responder(body):
        if last_user_message(body) == "slot 2":
            return Reply.error(400, "prompt is too long")
        return Reply("re: " + last_user_message(body), prompt_tokens=100, completion_tokens=50)

    with FakeLLMServer(responder) as server:
        for var in ("ANTHROPIC_BASE_URL", "GEMINI_BASE_URL"):
            monkeypatch.setenv(var, server.root_url)
        for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
            monkeypatch.setenv(var, "test-key")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield request.param, server


def direct_calls(server: FakeLLMServer) -> list[dict]:
    return [r for r in server.requests
            if not r["path"].startswith("batch:") and r["path"].endswith(("/chat/completions", "/messages", ":generateContent"))]


def test_native_batch_sends_a_round_as_one_batch_in_its_own_format(tmp_path, native):
    model, server = native
    setup = api_setup(tmp_path, model)
    got = asyncio.run(setup.ask_all(4))
    assert [g.text for i, g in enumerate(got) if i != 2] == ["re: slot 0", "re: slot 1", "re: slot 3"]
    assert isinstance(got[2], LLMError) and "prompt is too long" in str(got[2]) and "exchange-3" in str(got[2])
    assert len(server.batches) == 1 and not server.errors and not direct_calls(server)
    create = next(r for r in server.requests if r["path"].endswith(("/messages/batches", ":batchGenerateContent")))
    if model.startswith("anthropic/"):
        assert create["headers"]["x-api-key"] == "test-key" and create["path"] == "/v1/messages/batches"
        first = create["body"]["requests"][0]
        assert first["custom_id"] == "exchange-1"
        assert first["params"] == {"model": "claude-scripted", "max_tokens": 100, "system": "be brief",
                                   "messages": [{"role": "user", "content": "slot 0"}], "temperature": 0.7}
    else:
        assert create["headers"]["x-goog-api-key"] == "test-key"
        assert create["path"] == "/v1beta/models/gemini-scripted:batchGenerateContent"
        first = create["body"]["batch"]["input_config"]["requests"]["requests"][0]
        assert first["metadata"] == {"key": "exchange-1"}
        assert first["request"] == {"system_instruction": {"parts": [{"text": "be brief"}]},
                                    "contents": [{"role": "user", "parts": [{"text": "slot 0"}]}],
                                    "generation_config": {"max_output_tokens": 100, "temperature": 0.7}}
    rows = setup.store.exchanges()
    assert [r["status"] for r in rows] == ["done", "done", "failed", "done"]
    assert all(r["cost_usd"] == pytest.approx((100 * 1.0 + 50 * 4.0) / 1e6 * 0.5) for r in rows if r["status"] == "done")
    assert "prompt is too long" in rows[2]["error"] and setup.budget.queries_used == 4
    assert setup.store.round(1)["status"] == "collected" and setup.store.round(1)["mode"] == model.split("/")[0] + "-batch"


def test_native_batch_killed_in_flight_is_collected_not_sent_again(tmp_path, native):
    model, server = native
    server.hold_batches()
    first = api_setup(tmp_path, model)

    async def kill_after_submit():
        search = asyncio.ensure_future(first.ask_all(2))
        while (first.store.round(1) or {}).get("status") != "submitted":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a few polls: still in progress
        search.cancel()
        with pytest.raises(asyncio.CancelledError):
            await search

    asyncio.run(kill_after_submit())
    assert [r["status"] for r in first.store.exchanges()] == ["pending"] * 2
    first.store.close()
    server.release_batches()
    again = api_setup(tmp_path, model)
    got = asyncio.run(again.ask_all(2))
    assert [g.text for g in got] == ["re: slot 0", "re: slot 1"]
    assert len(server.batches) == 1  # collected, not submitted again
    assert sum(r["path"].startswith("batch:") for r in server.requests) == 2 and not direct_calls(server)
    assert len(again.store.exchanges()) == 2 and again.budget.queries_used == 2


def test_native_batch_poll_failures_poll_again(tmp_path, native):
    model, server = native
    server.poll_failures = 2
    setup = api_setup(tmp_path, model)
    seen = []
    setup.rounds.on_status = lambda n, state, age, count, problems: seen.append(state)
    got = asyncio.run(setup.ask_all(2))
    assert [g.text for g in got] == ["re: slot 0", "re: slot 1"] and len(server.batches) == 1
    assert seen[:3] == ["submitted", "poll failed (server), again in 0 s", "poll failed (server), again in 0 s"]
    assert seen[-1] == "collected" and server.poll_failures == 0


def test_anthropic_results_that_are_not_replies_are_failed_queries():
    from pike.llm.batch_native import AnthropicBatchTransport

    t = AnthropicBatchTransport.__new__(AnthropicBatchTransport)
    t.model = NATIVE[0]
    ok = {"type": "succeeded", "message": {"content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "x"}],
                                           "stop_reason": "max_tokens", "usage": {"input_tokens": 7, "output_tokens": 9}}}
    text = "\n".join(json.dumps(x) for x in [
        {"custom_id": "exchange-1", "result": ok},
        {"custom_id": "exchange-2", "result": {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": "max_tokens too large"}}}},
        {"custom_id": "exchange-3", "result": {"type": "expired"}},
        {"custom_id": "exchange-4", "result": {"type": "succeeded", "message": {"content": []}}},
    ]) + "\n{oops"
    got = t.parse_results(text, "batch b")
    assert (got["exchange-1"].text, got["exchange-1"].input_tokens, got["exchange-1"].output_tokens) == ("x", 7, 9)
    assert got["exchange-1"].finish_reason == "length"
    assert got["exchange-2"].kind == "bad_request" and "max_tokens too large" in str(got["exchange-2"])
    assert "request expired" in str(got["exchange-3"]) and "without content or usage" in str(got["exchange-4"])
    assert got.problems == ["batch b:5: not JSON (Expecting property name enclosed in double quotes)"]


def test_gemini_responses_count_thinking_tokens_and_name_blocked_prompts():
    from pike.llm.batch_native import GeminiBatchTransport

    t = GeminiBatchTransport.__new__(GeminiBatchTransport)
    t.model = NATIVE[1]
    thought = {"candidates": [{"content": {"parts": [{"text": "plan", "thought": True}, {"text": "code"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 20, "thoughtsTokenCount": 30}}
    got = t.parse_response({"response": thought}, "w")
    assert (got.text, got.input_tokens, got.output_tokens, got.finish_reason) == ("code", 10, 50, "stop")
    blocked = t.parse_response({"response": {"promptFeedback": {"blockReason": "SAFETY"},
                                             "usageMetadata": {"promptTokenCount": 10}}}, "w")
    assert isinstance(blocked, LLMError) and "blocked: SAFETY" in str(blocked) and blocked.input_tokens == 10
    err = t.parse_response({"error": {"code": 3, "message": "bad request"}}, "w")
    assert err.kind == "bad_request" and "bad request" in str(err)


# -------------------------------------------------------------------- end to end


def scripted(body: dict) -> Reply:
    return Reply(fenced(FUSED), prompt_tokens=800, completion_tokens=300)


def pike_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pike", "optimize", *args]


def search_args(out: Path, prices: Path) -> list[str]:
    # Two rounds: phase 0's three queries, then phase 1's (no IBA, no fixes).
    return [str(TASK), "--out", str(out), "--strategy", "pike-b", "--budget", "6", "--json",
            "--set", f"llm.prices_file={prices}", "--set", "search.pike_b.num_branches=3", "--set", "search.pike_b.top_k=2",
            "--set", "search.pike_b.iba=false", "--set", "search.max_fix_attempts=0"]


@pytest.fixture
def prices(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("model,input_per_mtok,output_per_mtok\n" + "".join(f"{m},1.0,4.0\n" for m in (MODEL, *NATIVE)))
    return p


def run_env(tmp_path, cache: str, **extra) -> dict:
    return {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / cache), "NO_PROXY": "127.0.0.1,localhost", **extra}


def answer(requests: Path, responses: Path) -> None:
    lines = [json.loads(x) for x in requests.read_text().splitlines()]
    out, errors = batch_output(lines, scripted)
    responses.write_text("".join(json.dumps(x) + "\n" for x in out + errors))


@pytest.mark.slow
def test_file_rounds_two_round_pike_b_run_moved_between_rounds(tmp_path, prices):
    out = tmp_path / "run"
    p = subprocess.run(pike_cmd(*search_args(out, prices), "--llm", "batch:", "--set", f"llm.model={MODEL}"),
                       capture_output=True, text=True, env=run_env(tmp_path, "cache-a"), timeout=600)
    assert p.returncode == 75, p.stderr[-3000:]
    requests = out / "batch" / "round-1.requests.jsonl"
    assert f"pike optimize --resume {out}" in p.stderr and str(requests) in p.stderr
    assert len(requests.read_text().splitlines()) == 3
    answer(requests, out / "batch" / "round-1.responses.jsonl")
    # The run directory goes to another machine (another place, no reference cache) for round 2.
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    p = subprocess.run(pike_cmd("--resume", str(moved)), capture_output=True, text=True, env=run_env(tmp_path, "cache-b"), timeout=600)
    assert p.returncode == 75, p.stderr[-3000:]
    assert "batch round 1 (3 requests): collected" in p.stderr
    answer(moved / "batch" / "round-2.requests.jsonl", moved / "batch" / "round-2.responses.jsonl")
    p = subprocess.run(pike_cmd("--resume", str(moved), "--json"), capture_output=True, text=True, env=run_env(tmp_path, "cache-b"),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    con = sqlite3.connect(moved / "run.db")
    ex = con.execute("SELECT role, phase, status, batch_round, cost_usd FROM exchanges ORDER BY id").fetchall()
    assert [(e[1], e[2], e[3]) for e in ex] == [(0, "done", 1)] * 3 + [(1, "done", 2)] * 3
    assert doc["queries"] == 6 and doc["usd"] == pytest.approx(6 * (800 * 1.0 + 300 * 4.0) / 1e6 * 0.5)  # batch price
    assert con.execute("SELECT COUNT(*) FROM solutions WHERE origin = 'coa' AND status = 'ok'").fetchone()[0] == 6
    assert [r[0] for r in con.execute("SELECT status FROM rounds ORDER BY n")] == ["collected", "collected"]


@pytest.mark.slow
# End to end through the CLI for the OpenAI format and one native one (Anthropic); Gemini's transport
# shares the native base and has its own fast tests above (one batch per round, a kill, a poll outage).
@pytest.mark.parametrize("model,ref", [(MODEL, "batch_"), (NATIVE[0], "msgbatch_")], ids=["openai", "anthropic"])
def test_provider_batch_two_rounds_and_a_kill_between_submit_and_collect(tmp_path, prices, model, ref):
    with FakeLLMServer(scripted) as server:
        env = run_env(tmp_path, "cache", OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key",
                      ANTHROPIC_BASE_URL=server.root_url, ANTHROPIC_API_KEY="test-key",
                      GEMINI_BASE_URL=server.root_url, GEMINI_API_KEY="test-key")
        out = tmp_path / "run"
        server.hold_batches()
        proc = subprocess.Popen(pike_cmd(*search_args(out, prices), "--llm", model, "--set", "llm.batch=true",
                                         "--set", "llm.batch_poll_s=0.05"),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and not server.batches:
            time.sleep(0.2)
        time.sleep(0.5)  # polled while in progress
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        progress = proc.stderr.read()
        assert len(server.batches) == 1, progress[-3000:]
        assert re.search(r"batch round 1 \(3 requests\): (in_progress|pending)( 0/3)? after", progress)  # the batch's state and age
        server.release_batches()
        p = subprocess.run(pike_cmd("--resume", str(out), "--json"), capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    assert len(server.batches) == 2  # round 1 collected after the kill, round 2 sent by the resume
    answered = [r for r in server.requests if r["path"].startswith("batch:")]
    assert len(answered) == 6 and not direct_calls(server)
    con = sqlite3.connect(out / "run.db")
    ex = con.execute("SELECT phase, status, batch_round FROM exchanges ORDER BY id").fetchall()
    assert ex == [(0, "done", 1)] * 3 + [(1, "done", 2)] * 3
    assert [r[0] for r in con.execute("SELECT ref FROM rounds ORDER BY n")] == [ref + "1", ref + "2"]
    assert json.loads(p.stdout)["usd"] == pytest.approx(6 * (800 * 1.0 + 300 * 4.0) / 1e6 * 0.5)


@pytest.mark.parametrize("args,message", [
    (["--llm", "batch:rounds"], "name it with --set llm.model=PROVIDER/MODEL"),
    (["--llm", MODEL, "--set", "llm.batch=true", "--set", "llm.batch_dir=x"], "exclude each other"),
    (["--llm", MODEL, "--set", "llm.batch=true", "--set", "llm.batch_discount=0"], "llm.batch_discount: must be positive"),
    (["--llm", "local/m@http://127.0.0.1:9/v1", "--set", "llm.batch=true"], "any model can go through file rounds"),
])
def test_bad_batch_settings_are_one_line_errors(tmp_path, args, message):
    p = subprocess.run(pike_cmd(str(TASK), "--out", str(tmp_path / "r"), *args), capture_output=True, text=True,
                       timeout=120, env=run_env(tmp_path, "cache", OPENAI_API_KEY="test-key"))
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_pike_o_file_rounds_are_generations_and_resume_their_iterations(tmp_path, prices):
    """PIKE-O is not phase-synchronous: a round is a generation of llm.concurrency iterations, and the
    iterations a round holds are resumed with their parents when its replies come."""
    out = tmp_path / "run"
    args = [str(TASK), "--out", str(out), "--strategy", "pike-o", "--budget", "6", "--llm", "batch:", "--set", f"llm.model={MODEL}",
            "--set", f"llm.prices_file={prices}", "--set", "llm.concurrency=3", "--set", "search.max_fix_attempts=0",
            "--set", "search.retime_top=0"]
    env = run_env(tmp_path, "cache")
    p = subprocess.run(pike_cmd(*args), capture_output=True, text=True, env=env, timeout=600)
    for n in (1, 2):
        assert p.returncode == 75, p.stderr[-3000:]
        requests = out / "batch" / f"round-{n}.requests.jsonl"
        assert len(requests.read_text().splitlines()) == 3  # one generation
        answer(requests, out / "batch" / f"round-{n}.responses.jsonl")
        p = subprocess.run(pike_cmd("--resume", str(out), "--json"), capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    con = sqlite3.connect(out / "run.db")
    ex = con.execute("SELECT phase, status, batch_round, solution_id FROM exchanges ORDER BY id").fetchall()
    # A generation's iterations query concurrently, so their exchanges may be stored in any order.
    assert sorted((e[0], e[1], e[2]) for e in ex) == [(i, "done", 1 + i // 3) for i in range(6)]
    sols = {r[0]: r for r in con.execute("SELECT id, phase, parent_id, status FROM solutions WHERE origin = 'coa'")}
    assert sorted(s[1] for s in sols.values()) == list(range(6)) and all(e[3] in sols for e in ex)
    # The second generation's parents were drawn from the first's correct children (exploit-only: the archive).
    first = {sid for sid, s in sols.items() if s[1] < 3 and s[3] == "ok"}
    assert first and {s[2] for s in sols.values() if s[1] >= 3} <= first | {None}


def test_a_round_waits_until_nothing_is_evaluating(tmp_path):
    """Queries made while evaluations run (other tasks, other branches) join the same round."""
    busy = [1]

    class Recording:
        mode = "test"
        sent: list[list[str]] = []

        async def submit(self, n, lines):
            self.sent.append([x["custom_id"] for x in lines])
            return f"ref-{n}"

        async def collect(self, n, ref, status):
            return {cid: reply for cid, reply in answers.items()}

    from pike.llm.base import Completion

    answers = {f"exchange-{i}": Completion(f"r{i}", 1, 1, 0.0, 0.0, MODEL, "stop") for i in range(1, 4)}
    setup = Setup(tmp_path, Recording())
    setup.rounds.busy = lambda: busy[0]

    async def go():
        first = asyncio.ensure_future(setup.ask(0))
        await asyncio.sleep(0.1)  # 10 settle periods: held, an evaluation is running
        later = [asyncio.ensure_future(setup.ask(i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        assert Recording.sent == []
        busy[0] = 0
        return await asyncio.gather(first, *later)

    got = asyncio.run(go())
    assert [g.text for g in got] == ["r1", "r2", "r3"]
    assert Recording.sent == [["exchange-1", "exchange-2", "exchange-3"]]


@pytest.mark.slow
def test_malformed_responses_file_is_reported_per_request(tmp_path, prices):
    out = tmp_path / "run"
    env = run_env(tmp_path, "cache")
    p = subprocess.run(pike_cmd(*search_args(out, prices), "--llm", "batch:", "--set", f"llm.model={MODEL}"),
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 75, p.stderr[-3000:]
    requests = out / "batch" / "round-1.requests.jsonl"
    good, broken, missing = [json.loads(x)["custom_id"] for x in requests.read_text().splitlines()]
    (out / "batch" / "round-1.responses.jsonl").write_text(
        json.dumps(reply_line(good, fenced(FUSED), 800, 300)) + "\n"
        + json.dumps({"custom_id": broken, "response": {"status_code": 200, "body": {"usage": {}}}}) + "\n"
        + '{"custom_id": "exchange-9", "response": \n')
    p = subprocess.run(pike_cmd("--resume", str(out)), capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 75, p.stderr[-3000:]  # the search went on to its next round
    err = " ".join(p.stderr.split())  # unwrapped
    assert f"batch round 1: malformed: round-1.responses.jsonl:2 ({broken}): reply has no choices" in err
    assert f"batch round 1: {missing}: no reply" in err and "round-1.responses.jsonl:3: not JSON" in err
    con = sqlite3.connect(out / "run.db")
    rows = con.execute("SELECT custom, status, error FROM (SELECT 'exchange-' || id AS custom, status, error FROM exchanges"
                       " WHERE batch_round = 1) ORDER BY custom").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(good, "done"), (broken, "failed"), (missing, "failed")]
    assert broken in rows[1][2] and missing in rows[2][2]
    # Only the good reply made a candidate in phase 0.
    assert con.execute("SELECT COUNT(*) FROM solutions WHERE origin = 'coa' AND phase = 0").fetchone()[0] == 1


def test_a_sweep_refuses_file_rounds(tmp_path):
    from pike.search.sweep import load_experiment

    exp = tmp_path / "exp.toml"
    exp.write_text(f'suite = "builtin"\n[base]\nllm = {{ model = "{MODEL}", batch_dir = "rounds" }}\n'
                   '[configs.b]\nsearch = { strategy = "pike-b" }\n')
    with pytest.raises(ValueError, match="file rounds .* a sweep cannot wait"):
        load_experiment(exp)
    exp.write_text(f'suite = "builtin"\n[base]\nllm = {{ model = "{MODEL}", batch = true }}\n'
                   '[configs.b]\nsearch = { strategy = "pike-b" }\n')
    assert load_experiment(exp).configs  # provider batches are fine in a sweep
