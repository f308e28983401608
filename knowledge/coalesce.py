"""Micro-batching of concurrent requests: one blocking call serves every request that waited.

The embedding model and the embedded index both cost less per item in one call with many items
than in many calls with one: the model pads and multiplies a batch at once, and the index
releases and re-takes the GIL once per call (each hand-over to a thread that wants it back can
wait the interpreter's switch interval, 5 ms). :class:`Coalescer` gives each caller its own
awaitable result while running the calls of an event loop one batch at a time in an executor:
while a batch runs, new requests queue and all go together in the next one (up to
``max_batch``). One request alone waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class Coalescer(Generic[RequestT, ResultT]):
    """Runs ``run_batch`` on batches of concurrently submitted requests.

    Args:
        run_batch: the blocking call; gets a list of requests and returns one result per
            request, in order. An exception it raises goes to every request of the batch.
        max_batch: most requests per call.
        executor: where ``run_batch`` runs (default: the event loop's default executor).
    """

    def __init__(
        self,
        run_batch: Callable[[list[RequestT]], Sequence[ResultT]],
        *,
        max_batch: int,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[RequestT, asyncio.Future[ResultT]]] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Calls of ``run_batch`` so far (for tests and the bench).
        self.batches = 0

    async def submit(self, request: RequestT) -> ResultT:
        """The result of ``request``, computed in the next batch.

        Raises:
            Exception: whatever ``run_batch`` raised for the batch.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (tests, asyncio.run): start afresh
            self._loop, self._waiting, self._drainer = loop, [], None
        future: asyncio.Future[ResultT] = loop.create_future()
        self._waiting.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run the waiting requests, a batch per call, until none is left."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self.batches += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [request for request, _ in batch]
                )
            except Exception as exc:  # handed to each waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # a caller that was cancelled
                    future.set_result(result)
