"""SIGTERM outside the drain (before the server is ready, or a second one during the drain): the process
exits at once with code 0 (server/stop_signal.py).

Real processes and real signals. The server as PID 1 of a real container, stopped while its model
loads, is in tests/images/test_images.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import time

import httpx

from tests.server_process import ServerProcess

WAIT = 30  # bound on every wait


def test_the_image_entrypoint_sets_its_handler_before_importing_the_server():
    # -X importtime reports each module as its import completes
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelpod.server", "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    order = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "modelpod.server.stop_signal" in order
    assert "uvicorn" in order
    assert order.index("modelpod.server.stop_signal") < order.index("uvicorn")


def test_sigterm_after_the_handler_is_set_exits_0_with_one_json_line():
    code = (
        "from modelpod.server.stop_signal import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        "print('set', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "set\n"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    line = json.loads(stderr.strip().splitlines()[-1])
    assert (line["level"], line["msg"], line["signal"]) == ("info", "signal 15: exiting now", 15)


def test_a_second_sigterm_during_the_drain_exits_0_at_once(echo_project):
    # one request in flight for 20 s, a drain budget of 60 s: the first signal would wait for it
    server = ServerProcess(echo_project(drain_timeout_s=60), env={"ECHO_DELAY": "20"}).start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            assert server.process is not None
            pending = pool.submit(
                httpx.post, f"{server.url}/predict", json={"inputs": {"x": [1, 1]}}, timeout=WAIT
            )
            deadline = time.monotonic() + WAIT
            # the model computes the request: counted in flight is not enough, since a request that has
            # not reached the batcher yet when the signal comes is refused with 503 (1 run in 4 here)
            while 'modelpod_busy_instances{model="echo"} 1.0' not in httpx.get(f"{server.url}/metrics").text:
                assert time.monotonic() < deadline, server.log
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            while httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200:
                assert time.monotonic() < deadline, server.log  # draining
                time.sleep(0.05)
            sent = time.monotonic()
            code = server.terminate(WAIT)
            took = time.monotonic() - sent
        finally:
            server.stop()
        assert isinstance(pending.exception(WAIT), httpx.HTTPError)  # cut off: "stops at once"
    assert code == 0, server.log
    assert took < 10, server.log  # a bound on the wait; the request alone had 20 s left
    assert '"msg":"signal 15 while draining: stopping now"' in server.log
    assert '"msg":"signal 15: exiting now"' in server.log


def test_sigterm_while_the_model_loads_exits_0_without_waiting_for_the_load(echo_project):
    # the model takes 60 s to load; uvicorn is up and the server is STARTING when the signal comes
    server = ServerProcess(echo_project(), env={"ECHO_LOAD_DELAY": "60"}).start(ready=False)
    try:
        sent = time.monotonic()
        code = server.terminate(WAIT)
        took = time.monotonic() - sent
    finally:
        server.stop()
    assert code == 0, server.log
    assert took < 10, server.log  # a bound on a wait, not a benchmark: the load alone would take 60 s
    assert '"msg":"signal 15 while starting: stopping now"' in server.log
    assert '"msg":"signal 15: exiting now"' in server.log
    assert '"msg":"model echo ready' not in server.log
