"""`modelpod serve` as a real process on a real socket (port 0), driven by real HTTP clients."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np


def test_predict_single_and_instances(digits_server, digits_dir):
    example = json.loads((digits_dir / "example.json").read_text())
    response = httpx.post(f"{digits_server.url}/predict", json={"inputs": example["inputs"]}, timeout=10)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["outputs"]["probabilities"], example["expected"]["probabilities"], atol=1e-6
    )

    response = httpx.post(
        f"{digits_server.url}/predict", json={"instances": [example["inputs"]] * 3}, timeout=10
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    assert all(int(np.argmax(p["probabilities"])) == 7 for p in predictions)


def test_bad_input_is_422_naming_the_input(digits_server):
    response = httpx.post(f"{digits_server.url}/predict", json={"inputs": {"image": [1, 2, 3]}}, timeout=10)
    assert response.status_code == 422
    assert response.json() == {
        "error": "input 'image': wrong shape; expected float32[8, 8, 1], got shape [3]"
    }


def test_predict_command_against_the_server(digits_server, digits_dir):
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "predict", str(digits_dir), "--url", digits_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(np.argmax(json.loads(result.stdout)["outputs"]["probabilities"])) == 7


def test_predict_command_unreachable_server(digits_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelpod",
            "predict",
            str(digits_dir),
            "--url",
            "http://127.0.0.1:9",
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9/predict" in result.stderr
    assert "Traceback" not in result.stderr
