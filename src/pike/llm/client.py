"""The one way the rest of PIKE talks to an LLM: budget, concurrency, retries, pricing, recording.

One `ask` is one query: it is reserved against the budget once, recorded once, and may take several
attempts (retries of 429/5xx/timeouts). Every attempt that returned tokens is priced.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Awaitable, Callable

from .base import ConfigError, Completion, LLMError, Provider, estimate_prompt_tokens
from .budget import Budget, BudgetGroup
from .pricing import PriceTable, cost_of
from .recorder import Recorder
from .rounds import Rounds

Sleep = Callable[[float], Awaitable[None]]
MAX_RETRY_AFTER_S = 600.0  # a longer Retry-After is a provider outage, not a pause


class LLMClient:
    def __init__(
        self,
        provider: Provider,
        model: str,
        prices: PriceTable,
        budget: Budget,
        *,
        concurrency: int = 4,
        timeout: float = 600.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_tokens: int = 8192,
        temperature: float = 0.7,
        recorder: Recorder | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        rounds: Rounds | None = None,
        request_body: Callable[[list[dict], int, float], dict] | None = None,
        price_scale: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("LLM concurrency must be >= 1")
        self.provider = provider
        self.model = model
        self.prices = prices
        self.budget = budget
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.recorder = recorder
        # Priced once, at setup: an unknown model fails here when a USD budget needs its price.
        self.price_in, self.price_out = prices.price(model, required=budget.max_usd is not None)
        # Batch rounds: queries go out with a round (pike.llm.rounds), at the batch price.
        if rounds is not None and request_body is None:
            raise ConfigError("batch rounds need the request body of the model's batch format")
        self.rounds, self.request_body = rounds, request_body
        self.price_in, self.price_out = self.price_in * price_scale, self.price_out * price_scale
        self.priced = prices.lookup(model) is not None
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    def cost(self, in_tokens: int, out_tokens: int) -> float:
        return cost_of(self.price_in, self.price_out, in_tokens, out_tokens)

    def reservation_usd(self, messages: list[dict], max_tokens: int) -> float:
        """Worst case of one attempt: the estimated prompt plus a reply of max_tokens."""
        return self.cost(estimate_prompt_tokens(messages), max_tokens)

    async def ask(
        self,
        role: str,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        budget: Budget | BudgetGroup | None = None,
        recorder: Recorder | None = None,
    ) -> Completion:
        """One query. Raises BudgetExhausted before sending when the budget is spent, and LLMError
        (after recording) on a non-retryable error or when retries run out. ``budget`` and ``recorder``
        override the client's for this query (a task's own query budget; a recorder that knows the
        task and phase)."""
        budget = budget or self.budget
        recorder = recorder or self.recorder
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        temperature = self.temperature if temperature is None else temperature
        timeout = self.timeout if timeout is None else timeout
        if self.rounds is not None:
            return await self._ask_in_round(role, messages, max_tokens, temperature, budget, recorder)
        async with self._semaphore():
            # Reserve inside the semaphore: at most `concurrency` queries are ever in flight, so a
            # kill loses at most that many.
            reservation = budget.reserve(self.reservation_usd(messages, max_tokens))
            try:
                rec_id = None if recorder is None else recorder.start(role, self.model, messages, reservation.usd)
            except BaseException:
                budget.release(reservation)
                raise
            return await self._run(rec_id, reservation, messages, max_tokens, temperature, timeout, budget, recorder)

    async def _run(self, rec_id, reservation, messages, max_tokens, temperature, timeout, budget, recorder) -> Completion:
        attempts, in_tok, out_tok, cost = 0, 0, 0, 0.0
        t0 = time.monotonic()
        try:
            while True:
                attempts += 1
                try:
                    reply = await self._attempt(messages, max_tokens, temperature, timeout)
                except LLMError as err:
                    in_tok, out_tok = in_tok + err.input_tokens, out_tok + err.output_tokens
                    cost += self.cost(err.input_tokens, err.output_tokens)
                    if err.retryable and attempts <= self.max_retries:
                        await self._sleep(self._backoff(attempts, err.retry_after))
                        continue
                    err.attempts, err.cost_usd = attempts, cost
                    billed = None
                    if in_tok or out_tok:
                        billed = Completion("", in_tok, out_tok, cost, time.monotonic() - t0, self.model,
                                            "error", attempts=attempts)
                    budget.settle(reservation, cost)
                    self._finish(recorder, rec_id, billed, str(err), attempts)
                    raise
                in_tok, out_tok = in_tok + reply.input_tokens, out_tok + reply.output_tokens
                cost += self.cost(reply.input_tokens, reply.output_tokens)
                # Tokens and cost cover every attempt of the query; latency is the query's wall time.
                done = replace(reply, input_tokens=in_tok, output_tokens=out_tok, cost_usd=cost,
                               latency_s=time.monotonic() - t0, attempts=attempts)
                budget.settle(reservation, cost)
                self._finish(recorder, rec_id, done, None, attempts)
                return done
        except BaseException as exc:
            if reservation.open:
                # Cancelled or a bug mid-request: it may have reached the provider, so it counts
                # at its reservation, as a kill would.
                budget.settle(reservation, max(cost, reservation.usd))
                detail = str(exc)[:500]
                self._finish(recorder, rec_id, None, type(exc).__name__ + (f": {detail}" if detail else ""), attempts)
            raise

    async def _ask_in_round(self, role, messages, max_tokens, temperature, budget, recorder) -> Completion:
        """One query through a batch round: no retries (a failed reply is a failed query), no concurrency
        cap (a round holds every query open at once). A query an earlier invocation already sent in a
        round is claimed back (``recorder.claim``), counted once and answered from that round."""
        if recorder is None:
            raise ConfigError("batch rounds need a recorder: a round names its queries by their exchange ids")
        body = self.request_body(messages, max_tokens, temperature)
        claim = getattr(recorder, "claim", None)
        held = claim(role) if claim is not None else None
        if held is not None:
            rec_id, reserved_usd, round_n = held
            reservation = budget.adopt(reserved_usd)
            waiting = self.rounds.claim(rec_id, round_n, body)
        else:
            reservation = budget.reserve(self.reservation_usd(messages, max_tokens))
            try:
                rec_id = recorder.start(role, self.model, messages, reservation.usd)
            except BaseException:
                budget.release(reservation)
                raise
            waiting = self.rounds.send(rec_id, body)
        t0 = time.monotonic()
        try:
            reply = await waiting
        except LLMError as err:
            err.attempts, err.cost_usd = 1, self.cost(err.input_tokens, err.output_tokens)
            billed = None
            if err.input_tokens or err.output_tokens:
                billed = Completion("", err.input_tokens, err.output_tokens, err.cost_usd, time.monotonic() - t0,
                                    self.model, "error")
            budget.settle(reservation, err.cost_usd)
            self._finish(recorder, rec_id, billed, str(err), 1)
            raise
        except BaseException:
            # Stopped with the query out (a file round was written, a kill): it stays pending in the
            # store, counted at its reservation, and a resume claims its reply.
            budget.settle(reservation, reservation.usd)
            raise
        cost = self.cost(reply.input_tokens, reply.output_tokens)
        done = replace(reply, cost_usd=cost, latency_s=time.monotonic() - t0, model=self.model)
        budget.settle(reservation, cost)
        self._finish(recorder, rec_id, done, None, 1)
        return done

    async def _attempt(self, messages, max_tokens, temperature, timeout) -> Completion:
        # Providers honour `timeout` themselves; this guard catches one that does not.
        try:
            async with asyncio.timeout(timeout * 1.1 + 1.0):
                return await self.provider.complete(
                    messages, max_tokens=max_tokens, temperature=temperature, timeout=timeout
                )
        except TimeoutError:
            raise LLMError("timeout", f"no reply within {timeout:g} s") from None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # Honour the provider, with a little jitter so concurrent callers do not return together.
            return min(retry_after, MAX_RETRY_AFTER_S) * self._rng.uniform(1.0, 1.1)
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop: a client may outlive an asyncio.run (CLI phases, tests).
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    @staticmethod
    def _finish(recorder, rec_id, completion, error, attempts) -> None:
        if recorder is not None and rec_id is not None:
            recorder.finish(rec_id, completion, error, attempts)

    async def aclose(self) -> None:
        if self.rounds is not None:
            await self.rounds.aclose()
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()
