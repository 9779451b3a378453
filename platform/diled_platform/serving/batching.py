"""Dynamic batching for the Serve app (``diled_platform.serving.app``): concurrent requests joined into one
model call, the next batch formed when the model is free."""

import asyncio
from typing import Any


def check_batching(max_batch_size: int | None = None, wait_s: float | None = None) -> None:
    """ValueError naming a bad batch limit (an integer >= 1) or wait (a finite number of seconds >= 0)."""
    if max_batch_size is not None and (isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int)
                                       or max_batch_size < 1):
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if wait_s is not None and (isinstance(wait_s, bool) or not isinstance(wait_s, (int, float))
                               or not 0 <= wait_s < float("inf")):
        raise ValueError(f"batch_wait_timeout_s must be a finite number >= 0, got {wait_s!r}")


class Batcher:
    """Dynamic batching that forms the next batch when the model is free: whatever queued while the last
    batch ran (up to ``max_batch_size``), after waiting at most ``wait_s`` for more when that is fewer.

    Ray Serve's ``@serve.batch`` (Ray 2.60) forms batches on their own timer, ``batch_wait_timeout_s``
    after each first arrival, whether or not the model is busy; with one batch running at a time the
    formed batches then wait their turn, so under load each holds what arrives in one timeout window (2
    to 4 requests with 16 clients waiting, measured), not what queued during the computation. Here the
    loop awaits each batch before it forms the next, so batches grow with the load. Requests whose caller
    has gone (a cancelled future) are dropped before their batch runs; an exception fails every request of
    its batch."""

    def __init__(self, handle_batch, max_batch_size: int = 16, wait_s: float = 0.005):
        self.handle_batch = handle_batch
        self.configure(max_batch_size, wait_s)
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    def configure(self, max_batch_size: int | None = None, wait_s: float | None = None) -> None:
        """Change the batch limit and the wait (the next batch uses them); None keeps a value as it is."""
        check_batching(max_batch_size, wait_s)
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        if wait_s is not None:
            self.wait_s = float(wait_s)

    async def submit(self, item):
        """Queue ``item``; its result (``handle_batch``'s answer at its index) when its batch has run."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.wait_s
            while len(self._queue) < self.max_batch_size and loop.time() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch, self._queue = self._queue[:self.max_batch_size], self._queue[self.max_batch_size:]
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                results = await self.handle_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests gave {len(results)} results")
            except BaseException as e:  # noqa: BLE001 -- no caller of a failed batch may hang
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e if isinstance(e, Exception) else RuntimeError("the batch was cancelled"))
                if not isinstance(e, Exception):
                    raise  # the loop itself was cancelled (shutdown); the next submit starts a new one
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
