"""The largest requests the defaults allow, sent to a real digits server while another process polls its
health: none raises the server's resident memory by more than 4x its body, memory goes back after it,
and health answers within 100 ms throughout. Linux only: the server's memory is read from /proc."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from modelpod.server.http.limits import RequestLimits
from modelpod.specfile import load_spec

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")

POLLER = Path(__file__).with_name("health_poller.py")
ITEM = [[[0.5]] * 8] * 8  # one digits image
WAIT = 60


def memory(pid: int, key: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak since the last reset) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def largest_requests(limits: RequestLimits) -> Iterator[tuple[str, str, bytes, int]]:
    """(name, path, body, expected status): requests of exactly the body limit, with the most items."""
    size, items = limits.max_body_bytes, limits.max_items
    flat = {"name": "image", "shape": [items, 8, 8, 1], "datatype": "FP32", "data": [0.5] * (64 * items)}
    core = orjson.dumps({"inputs": [flat]})
    yield "v2, padded with whitespace", "/v2/models/digits/infer", core + b" " * (size - len(core)), 200
    nested = orjson.dumps({"inputs": [{**flat, "data": [ITEM] * items}]})
    yield "v2, nested lists", "/v2/models/digits/infer", nested + b" " * (size - len(nested)), 200
    instances = orjson.dumps({"instances": [{"image": ITEM}] * items})
    width = (size - len(instances)) // (64 * items) + 3  # each 0.5 written with as many digits as fit
    long = instances.replace(b"0.5", b"0.5" + b"0" * (width - 3))
    yield "/predict, long decimals", "/predict", long + b" " * (size - len(long)), 200
    # the request (shape [131070, 8, 8, 1], all zeros), cut to the body limit
    head = b'{"inputs":[{"name":"image","shape":[131070,8,8,1],"datatype":"FP32","data":['
    zeros = head + b"0," * ((size - len(head) - 6) // 2)
    zeros = zeros[:-1] + b"]}]}"
    yield "v2, 131070 items of zeros", "/v2/models/digits/infer", zeros + b" " * (size - len(zeros)), 413


def test_the_largest_requests_stay_within_4x_their_body_and_health_answers_within_100ms(
    digits_server, digits_dir
):
    limits = RequestLimits.for_spec(load_spec(digits_dir))
    assert limits.max_body_bytes == 8 * 2**20  # digits: memory 512Mi
    pid = digits_server.process.pid
    port = digits_server.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=digits_server.url, timeout=WAIT) as client:
        for name, path, body, status in largest_requests(limits):
            time.sleep(0.5)  # the previous request's release
            base = memory(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            poller = subprocess.Popen(
                [sys.executable, str(POLLER), port], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            try:
                assert poller.stdout is not None
                assert poller.stdout.readline().strip() == "connected"
                time.sleep(0.05)
                response = client.post(path, content=body, headers={"content-type": "application/json"})
                time.sleep(0.3)
                out, _ = poller.communicate("", timeout=WAIT)
            finally:
                poller.kill()
            latencies = json.loads(out)
            peak = memory(pid, "VmHWM")
            deadline = time.monotonic() + 5
            while memory(pid, "VmRSS") - base > len(body) / 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            after = memory(pid, "VmRSS")
            report = (
                f"{name}: {len(body)} bytes, {response.status_code} {response.text[:120]!r}; "
                f"resident {base >> 20} MiB, peak +{(peak - base) / len(body):.2f}x, "
                f"after +{(after - base) / len(body):.2f}x; health max {max(latencies):.1f} ms "
                f"of {len(latencies)}\n--- server log ---\n{digits_server.log[-3000:]}"
            )
            print(report.split("\n")[0])
            assert response.status_code == status, report
            assert len(body) == limits.max_body_bytes
            assert peak - base <= 4 * len(body), report
            assert after - base <= len(body) / 2, report
            assert len(latencies) > 10, report
            assert max(latencies) < 100, report
