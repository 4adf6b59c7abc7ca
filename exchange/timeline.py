"""Benchmark-only: where the slowest exchanges spent their time (bench/http_benchmark.py, README "Performance").

With ``JWTEX_BENCH_TIMELINE=1`` outside production mode (the locks of ``exchange.ablation``),
each exchange on the lean route notes the moments it passed (admitted, verified, decided,
minted, its audit record queued and durable…), the process notes its garbage collections and
configuration re-checks, and at exit the slowest exchanges' timelines, with what ran
meanwhile, go to ``bench-timeline-PID.json`` in ``JWTEX_VAR_DIR``. Otherwise ``mark()`` is one
global test and nothing is kept.
"""

from __future__ import annotations

import gc
import heapq
import json
import os
import threading
import time
from pathlib import Path

KEEP = 40  # slowest exchanges kept
_EVENTS = 20_000  # process events kept (the latest)

_on = False
_local = threading.local()
_lock = threading.Lock()
_slowest: list[tuple[float, int, list]] = []
_events: list[tuple[float, float, str]] = []
_gc_started: dict[int, float] = {}
_count = 0


def mark(name: str) -> None:
    if _on:
        marks = getattr(_local, "marks", None)
        if marks is not None:
            marks.append((name, time.perf_counter()))


def begin() -> None:
    if _on:
        _local.marks = [("request in", time.perf_counter())]


def end() -> None:
    global _count
    if not _on:
        return
    marks, _local.marks = getattr(_local, "marks", None), None
    if not marks:
        return
    marks.append(("answer out", time.perf_counter()))
    took = marks[-1][1] - marks[0][1]
    with _lock:
        _count += 1
        item = (took, _count, marks)
        if len(_slowest) < KEEP:
            heapq.heappush(_slowest, item)
        elif took > _slowest[0][0]:
            heapq.heapreplace(_slowest, item)


def event(name: str, started: float, ended: float) -> None:
    """Something the process did that may have held requests up (a collection, a re-check)."""
    if _on:
        with _lock:
            _events.append((started, ended, name))
            if len(_events) > 2 * _EVENTS:
                del _events[:_EVENTS]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_started[threading.get_ident()] = time.perf_counter()
    else:
        started = _gc_started.pop(threading.get_ident(), None)
        if started is not None:
            event(f"gc gen{info.get('generation')} ({info.get('collected', 0)} freed)", started, time.perf_counter())


def enable(directory: Path) -> None:
    """Start recording; the report is written at the process's exit."""
    global _on
    from multiprocessing.util import Finalize

    _on = True
    gc.callbacks.append(_on_gc)
    Finalize(None, report, args=(directory,), exitpriority=20)


def report(directory: Path) -> None:
    with _lock:
        slowest = sorted(_slowest, reverse=True)
        events = list(_events)
    out = []
    for took, _, marks in slowest:
        start, finish = marks[0][1], marks[-1][1]
        steps = [{"at_ms": round((at - start) * 1000, 3), "step": name} for name, at in marks]
        meanwhile = [
            {"at_ms": round((s - start) * 1000, 3), "ms": round((e - s) * 1000, 3), "what": name}
            for s, e, name in events
            if e >= start and s <= finish
        ]
        out.append({"ms": round(took * 1000, 3), "steps": steps, "meanwhile": meanwhile})
    path = Path(directory) / f"bench-timeline-{os.getpid()}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps({"exchanges": _count, "slowest": out}))
    partial.replace(path)
