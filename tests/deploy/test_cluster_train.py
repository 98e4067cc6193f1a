"""`modelpod train`: locally as a real subprocess, and as a Job against a faked API server.

The API server is a fake (tests/deploy/fake_api.py) because none can run on these machines; the Job
itself comes from the real renderer and goes through the real lightkube adapter.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelpod.deploy.render import render_training_job
from modelpod.deploy.rollout import Waiting
from modelpod.deploy.training import JOB_NAME_LABEL, TrainingError, train_local, train_on_cluster
from modelpod.specfile import Spec, load_spec
from tests.deploy.fake_api import GOOD, FakeApi, FakeClock


def spec_with_command(write_spec: Callable[..., Path], command: list[str] | None) -> Spec:
    train = f"train: {{command: {json.dumps(command)}, output_dir: out}}\n" if command else ""
    path = write_spec(
        f"name: trainer\nmodel: {{path: model.onnx}}\nkubernetes: {{namespace: models}}\n{train}"
    )
    return load_spec(path)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# -- locally ------------------------------------------------------------------------------------------


def test_local_training_streams_output_in_the_spec_directory(write_spec: Callable[..., Path]) -> None:
    code = (
        "import os, pathlib; print('epoch 1', flush=True); print(os.getcwd());"
        "out = pathlib.Path(os.environ['MODELPOD_OUTPUT_DIR']); out.mkdir();"
        "(out / 'model.onnx').write_text('m')"
    )
    spec = spec_with_command(write_spec, python(code))
    lines: list[str] = []
    train_local(spec, on_line=lines.append, timeout_s=60)
    assert lines == ["epoch 1", str(spec.root)]
    assert (spec.root / "out" / "model.onnx").read_text() == "m"


def test_local_python_command_runs_on_modelpods_python(
    write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python train.py` must find the packages modelpod runs with, activated virtual environment or not
    monkeypatch.setenv("PATH", "/nonexistent")
    spec = spec_with_command(write_spec, ["python", "-c", "import sys; print(sys.executable)"])
    lines: list[str] = []
    train_local(spec, on_line=lines.append, timeout_s=60)
    assert lines == [sys.executable]


def test_local_training_failure_shows_the_exit_code_and_last_lines(write_spec: Callable[..., Path]) -> None:
    spec = spec_with_command(write_spec, python("import sys; print('loss: nan'); sys.exit(3)"))
    with pytest.raises(TrainingError, match=r"exited with code 3:\n  loss: nan"):
        train_local(spec, on_line=lambda line: None, timeout_s=60)


def test_local_training_is_stopped_at_its_timeout(write_spec: Callable[..., Path]) -> None:
    spec = spec_with_command(write_spec, python("import time; print('start', flush=True); time.sleep(60)"))
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(TrainingError, match=r"did not finish within 1s and was stopped"):
        train_local(spec, on_line=lines.append, timeout_s=1)
    assert time.monotonic() - started < 15
    assert lines == ["start"]


def test_local_training_without_a_command_or_program_is_a_clear_error(
    write_spec: Callable[..., Path],
) -> None:
    with pytest.raises(TrainingError, match="has no training command"):
        train_local(spec_with_command(write_spec, None), on_line=print, timeout_s=5)
    missing = spec_with_command(write_spec, ["modelpod-no-such-trainer"])
    with pytest.raises(TrainingError, match="cannot start the training command 'modelpod-no-such-trainer'"):
        train_local(missing, on_line=print, timeout_s=5)


# -- as a Job -----------------------------------------------------------------------------------------


def job_runs(
    final: str, *, waiting: dict[str, str] | None = None
) -> Callable[[FakeApi, dict[str, Any]], None]:
    """A controller for the fake: the Job's pod runs, logs two lines, and the Job ends with `final`."""

    def behave(api: FakeApi, job: dict[str, Any]) -> None:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        container = {"name": "train", "image": GOOD, "imageID": "", "ready": not waiting, "restartCount": 0}
        container["state"] = {"waiting": waiting} if waiting else {"running": {}}
        api.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-x1", "namespace": namespace, "labels": {JOB_NAME_LABEL: name}},
                "spec": job["spec"]["template"]["spec"],
                "status": {"phase": "Pending" if waiting else "Running", "containerStatuses": [container]},
            },
            "pods",
        )
        api.logs[f"{name}-x1"] = ["epoch 1 loss 0.3", "saved model"]
        if final:
            reason = "BackoffLimitExceeded" if final == "Failed" else ""
            job["status"] = {"conditions": [{"type": final, "status": "True", "reason": reason}]}

    return behave


@pytest.fixture
def job(write_spec: Callable[..., Path]) -> dict[str, Any]:
    spec = spec_with_command(write_spec, ["python", "train.py"])
    return render_training_job(spec, image=GOOD, run_id="r1")


def waiting(timeout_s: float = 30) -> Waiting:
    clock = FakeClock()
    return Waiting(timeout_s=timeout_s, interval_s=1, clock=clock, sleep=clock.sleep)


def test_job_is_created_and_followed_to_completion(job: dict[str, Any]) -> None:
    api = FakeApi(job_behaviour=job_runs("Complete"))
    lines: list[str] = []
    outcome = train_on_cluster(api.cluster(), job, follow=True, on_line=lines.append, waiting=waiting())
    assert (outcome.job, outcome.namespace, outcome.state) == ("trainer-train-r1", "models", "succeeded")
    assert lines == ["epoch 1 loss 0.3", "saved model"]
    created = api.get("jobs", "trainer-train-r1", "models")
    assert created is not None
    assert created["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "train.py"]


def test_job_without_follow_is_only_submitted(job: dict[str, Any]) -> None:
    api = FakeApi()
    outcome = train_on_cluster(api.cluster(), job, follow=False, on_line=print, waiting=waiting())
    assert outcome.state == "submitted"
    with pytest.raises(TrainingError, match="exists already in namespace models"):
        train_on_cluster(api.cluster(), job, follow=False, on_line=print, waiting=waiting())


def test_failed_job_is_an_error(job: dict[str, Any]) -> None:
    api = FakeApi(job_behaviour=job_runs("Failed"))
    with pytest.raises(TrainingError, match="Job trainer-train-r1 failed: BackoffLimitExceeded"):
        train_on_cluster(api.cluster(), job, follow=True, on_line=lambda line: None, waiting=waiting())


def test_job_that_does_not_finish_times_out(job: dict[str, Any]) -> None:
    api = FakeApi(job_behaviour=job_runs(""))
    with pytest.raises(TrainingError, match="did not finish within 5s; it goes on running"):
        train_on_cluster(api.cluster(), job, follow=True, on_line=lambda line: None, waiting=waiting(5))


def test_job_whose_image_cannot_be_pulled_fails_fast(job: dict[str, Any]) -> None:
    pull = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    api = FakeApi(job_behaviour=job_runs("", waiting=pull))
    with pytest.raises(TrainingError, match="cannot start: container train ImagePullBackOff"):
        train_on_cluster(api.cluster(), job, follow=True, on_line=lambda line: None, waiting=waiting())
