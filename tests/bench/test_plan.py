"""`modelpod plan` as a pure function (exact numbers from known inputs), and the spec editing of --write."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from modelpod.bench.plan import Slo, cpu_quantity, make_plan, memory_quantity
from modelpod.errors import ModelpodError
from modelpod.specfile.edit import set_profile

MIB = 1024 * 1024


def step(load: float, rps: float, p99: float, *, errors: float = 0.0, cores: float = 0.5, rss: int = 0,
         mean_ms: float = 10.0) -> dict:  # fmt: skip
    return {
        "load": load,
        "throughput_rps": rps,
        "error_rate": errors,
        "latency_ms": {"p50": p99 / 3, "p99": p99, "mean": mean_ms},
        "in_flight": round(rps * mean_ms / 1000, 2),
        "server": {"cpu_cores": cores, "rss_bytes": rss},
    }


RESULT = {
    "version": 1,
    "limits": {"max_p99_ms": 1000.0, "max_error_rate": 0.01},
    "server": {"startup_s": 7.0, "model_load_s": 2.0},
    "steps": [
        step(1, 100.0, 12.0, cores=0.30, rss=300 * MIB, mean_ms=10.0),
        step(2, 180.0, 20.0, cores=0.62, rss=310 * MIB, mean_ms=11.0),
        step(4, 250.0, 45.0, cores=0.96, rss=330 * MIB, mean_ms=16.0),
        step(8, 260.0, 140.0, cores=1.00, rss=400 * MIB, mean_ms=30.0),
    ],
}


def test_plan_from_known_inputs() -> None:
    plan = make_plan(RESULT, Slo(rps=1000, p99_ms=50, peak_rps=2000))
    assert plan.step == 2  # the most throughput with p99 <= 50 ms: 250/s at concurrency 4
    assert (plan.load, plan.capacity_rps, plan.p99_ms) == (4, 250.0, 45.0)
    assert plan.replicas == 5  # ceil(1000 / 250) = 4, + 1 for a lost replica
    assert plan.min_replicas == 5
    assert plan.max_replicas == 9  # ceil(2000 / 250) + 1
    assert plan.cpu == "1200m"  # 0.96 cores x 1.25 = 1.2
    assert plan.target_cpu_percent == 80  # 0.96 / 1.2
    assert plan.memory == "512Mi"  # 400 MiB (the largest of any step) x 1.25 = 500 MiB, up to 64 MiB steps
    assert plan.target_concurrency == 4.0  # 250/s x 16 ms
    assert plan.startup_s == 7.0
    assert plan.rollout_s == 5 * (7.0 + 5)  # five pods one at a time, each start-up plus a readiness period
    assert plan.notes == []
    assert plan.profile_values() == {
        "resources": {"cpu": "1200m", "memory": "512Mi"},
        "scaling": {"replicas": 5, "min_replicas": 5, "max_replicas": 9, "target_concurrency": 4.0,
                    "target_cpu_percent": 80},
    }  # fmt: skip


def test_a_tighter_slo_picks_a_lower_load_and_errors_disqualify_a_step() -> None:
    result = {**RESULT, "steps": [*RESULT["steps"][:2], step(4, 250.0, 45.0, errors=0.02)]}
    plan = make_plan(result, Slo(rps=100, p99_ms=50, startup_s=30))
    assert (plan.load, plan.capacity_rps) == (2, 180.0)  # the 4-caller step failed 2% of its requests
    assert plan.replicas == plan.max_replicas == 2  # ceil(100 / 180) + 1; peak defaults to the rate
    assert plan.rollout_s == 2 * 35


def test_no_step_meets_the_slo() -> None:
    with pytest.raises(
        ModelpodError, match=r"no step of the bench met p99 <= 5 ms .* lowest p99 was 12.0 ms"
    ):
        make_plan(RESULT, Slo(rps=10, p99_ms=5))


def test_without_server_figures_resources_are_left_alone() -> None:
    result = {**RESULT, "server": None, "steps": [{**s, "server": None} for s in RESULT["steps"]]}
    plan = make_plan(result, Slo(rps=100, p99_ms=50))
    assert plan.cpu is plan.memory is plan.target_cpu_percent is plan.rollout_s is None
    assert len(plan.notes) == 3
    assert "resources" not in plan.profile_values()


@pytest.mark.parametrize(("cores", "text"), [(2.0, "2"), (0.1, "100m"), (1.25, "1250m")])
def test_cpu_quantity(cores: float, text: str) -> None:
    assert cpu_quantity(cores) == text


def test_memory_quantity() -> None:
    assert memory_quantity(2048 * MIB) == "2Gi"
    assert memory_quantity(576 * MIB) == "576Mi"


SPEC = textwrap.dedent(
    """\
    # digits, with a comment the edit must keep
    name: digits
    model: {path: model.onnx}  # inline comment
    profiles:
      keras:  # the Keras file
        model:
          path: model/digits.keras
      # production sizing
      prod:
        resources: {cpu: "2", memory: 1Gi}
        kubernetes: {namespace: models}

    # the end
    """
)
VALUES = {"resources": {"cpu": "1200m", "memory": "512Mi"}, "scaling": {"replicas": 5, "max_replicas": 9}}


def test_set_profile_rewrites_only_that_profile() -> None:
    assert set_profile(SPEC, "prod", VALUES) == SPEC.replace(
        '    resources: {cpu: "2", memory: 1Gi}\n    kubernetes: {namespace: models}\n',
        "    resources:\n      cpu: 1200m\n      memory: 512Mi\n    kubernetes:\n      namespace: models\n"
        "    scaling:\n      replicas: 5\n      max_replicas: 9\n",
    )


def test_set_profile_adds_a_missing_profile_after_the_others() -> None:
    edited = set_profile(SPEC, "staging", VALUES)
    assert edited.startswith(SPEC.split("\n# the end")[0].rstrip("\n") + "\n  staging:\n    resources:\n")
    assert edited.endswith("\n# the end\n")
    assert yaml.safe_load(edited)["profiles"]["staging"] == VALUES


def test_set_profile_adds_profiles_to_a_spec_without_them_and_keeps_flow_style() -> None:
    assert set_profile("name: x  # keep\n", "prod", {"scaling": {"replicas": 2}}) == (
        "name: x  # keep\nprofiles:\n  prod:\n    scaling:\n      replicas: 2\n"
    )
    assert set_profile("name: x\nprofiles: {prod: {scaling: {replicas: 1}}}\n", "prod", VALUES) == (
        "name: x\nprofiles: {prod: {scaling: {replicas: 5, max_replicas: 9}, "
        "resources: {cpu: 1200m, memory: 512Mi}}}\n"
    )


def test_a_wide_sweep_is_plotted_on_a_log_scale() -> None:
    """Loads from 1 to 8 and more: the load axis is logarithmic, base 2, labelled in plain numbers."""
    from modelpod.bench.plot import figure

    steps = [{**s, "latency_ms": {**s["latency_ms"], "p90": 1.0, "p99_9": 2.0}} for s in RESULT["steps"]]
    result = {**RESULT, "mode": "closed", "endpoint": "/predict", "url": "http://127.0.0.1:8080",
              "steps": steps, "knee": 2}  # fmt: skip
    latency, throughput = figure(result).axes
    assert throughput.get_xscale() == "log"
    assert [line.get_label() for line in latency.get_lines()][-1] == "knee (4)"
