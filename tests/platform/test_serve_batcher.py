"""The Serve app's batcher (diled_platform.serving.batching.Batcher), on its own: plain asyncio, no Ray."""

import asyncio

import pytest

from diled_platform.serving.batching import Batcher


class Model:
    """A batch handler that records its batches and holds each for ``seconds`` (a computation)."""

    def __init__(self, seconds: float = 0.05, fail_on=None):
        self.batches, self.seconds, self.fail_on = [], seconds, fail_on

    async def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        await asyncio.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [x * 10 for x in items]


def test_the_next_batch_is_what_queued_while_the_last_one_ran():
    async def main():
        model = Model(seconds=0.05)
        batcher = Batcher(model, max_batch_size=16, wait_s=0.001)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)                       # the first batch is running
        late = [asyncio.create_task(batcher.submit(i)) for i in range(1, 11)]
        for i in range(1, 11):                          # arriving over 20 ms, many wait windows apart
            await asyncio.sleep(0.002)
        return await first, await asyncio.gather(*late), model.batches

    first, late, batches = asyncio.run(main())
    assert first == 0 and late == [i * 10 for i in range(1, 11)]     # each caller gets its own answer
    # one batch for everything that queued during the first computation (Serve's timer would cut it up)
    assert batches == [[0], list(range(1, 11))]


def test_batches_are_capped_and_a_failure_fails_only_its_own_batch():
    async def main():
        model = Model(seconds=0.02, fail_on=3)
        batcher = Batcher(model, max_batch_size=4, wait_s=0.0)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        after = await batcher.submit(20)                  # the batcher still works after a failure
        return results, model.batches, after

    results, batches, after = asyncio.run(main())
    assert batches[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(isinstance(r, ValueError) and "bad item 3" in str(r) for r in results[:4])
    assert results[4:] == [i * 10 for i in range(4, 10)] and after == 200


def test_a_caller_that_went_away_is_dropped_from_its_batch():
    async def main():
        model = Model(seconds=0.05)
        batcher = Batcher(model, max_batch_size=8, wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()                                    # e.g. the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await first, await kept, model.batches

    first, kept, batches = asyncio.run(main())
    assert (first, kept) == (0, 20) and batches == [[0], [2]]


def test_a_handler_that_answers_the_wrong_number_of_results_fails_its_callers():
    async def wrong(items):
        return items[:-1]

    async def main():
        batcher = Batcher(wrong, max_batch_size=4, wait_s=0.01)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "3 requests gave 2 results" in str(r) for r in results)


def test_callers_of_a_cancelled_batch_get_an_error_and_the_batcher_restarts():
    async def main():
        model = Model(seconds=0.2)
        batcher = Batcher(model, max_batch_size=4, wait_s=0.0)
        waiting = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)                       # the batch is running
        batcher._loop_task.cancel()                     # e.g. the replica's loop shutting down
        results = await asyncio.gather(*waiting, return_exceptions=True)
        return results, await batcher.submit(7)

    results, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "cancelled" in str(r) for r in results), results
    assert after == 70


@pytest.mark.parametrize("size,wait,message", [
    (0, None, "max_batch_size must be an integer >= 1, got 0"),
    (2.5, None, "got 2.5"),
    (True, None, "got True"),
    (None, -0.1, "batch_wait_timeout_s must be a finite number >= 0, got -0.1"),
    (None, float("inf"), "got inf"),
    (None, "soon", "got 'soon'"),
])
def test_bad_batch_settings_are_refused_and_change_nothing(size, wait, message):
    batcher = Batcher(Model(), max_batch_size=4, wait_s=0.01)
    with pytest.raises(ValueError, match=message):
        batcher.configure(size, wait)
    assert (batcher.max_batch_size, batcher.wait_s) == (4, 0.01)
    batcher.configure(8, 0)
    assert (batcher.max_batch_size, batcher.wait_s) == (8, 0.0)
