"""Web and Celery log in one format (docs/operations.md#logs): every line the worker (with beat) writes is JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_celery_worker_and_beat_log_json_lines_like_the_web(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWTEX_", "DJANGO_", "DATABASE_URL", "CELERY_", "CACHE_URL"))
    }
    env.update(JWTEX_VAR_DIR=str(tmp_path), JWTEX_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "jwtex_site",
            "--quiet",
            "worker",
            "--beat",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            line = worker.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready." in line:
                break
    finally:
        worker.send_signal(signal.SIGTERM)
        rest, _ = worker.communicate(timeout=30)
    lines += rest.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # raises on any non-JSON line
    assert any(r["message"].endswith("ready.") and r["logger"].startswith("celery") for r in records), lines
    assert any(r["logger"] == "celery.beat" for r in records)
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
