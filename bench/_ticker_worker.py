"""`ticketexport worker` with a 1 ms ticker on its event loop, for bench/latency.py.

    python bench/_ticker_worker.py OUT.json [--concurrency N]

Runs exactly what `ticketexport worker` runs (ticketexport.runtime's worker process) in one
asyncio loop, beside a task that sleeps 1 ms at a time and notes how late each wake-up was:
that lateness is how long something else (the export's own coroutines, heartbeats, other
jobs, procrastinate) held the loop. On SIGTERM it writes [[monotonic, lateness_s], …] for
every tick to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

TICK = 0.001


async def _ticker(samples: list[tuple[float, float]]) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(TICK)
        after = time.monotonic()
        samples.append((after, max(0.0, after - before - TICK)))


async def _main(concurrency: int, samples: list[tuple[float, float]]) -> None:
    from ticketexport import db, runtime
    from ticketexport.config import Settings
    from ticketexport.logs import configure_logging

    configure_logging()
    settings = Settings.from_env()
    with db.database_url(settings) as url:
        ticker = asyncio.create_task(_ticker(samples))
        try:
            await runtime._worker_process(settings, url, concurrency)
        finally:
            ticker.cancel()


def main() -> int:
    out = Path(sys.argv[1])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    samples: list[tuple[float, float]] = []
    try:
        asyncio.run(_main(concurrency, samples))
    finally:
        out.write_text(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
