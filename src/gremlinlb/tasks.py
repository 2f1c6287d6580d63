"""Stopping asyncio tasks so that the stopper's own cancellation is never lost."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended, whatever it ended with (each exception
    is retrieved: none is logged as never retrieved).

    Why not ``task.cancel(); with suppress(CancelledError): await task``: a cancel of the
    caller that arrives while it waits is handed on to the awaited task, comes back as that
    task's CancelledError and is swallowed with it, so a loop built on it outlives its stop.
    The gathering future raises the caller's own cancel once the tasks have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
