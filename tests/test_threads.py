"""Intra-op threads follow the container's CPU quota (cgroup v2 and v1), and reach the frameworks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelpod.runtimes._threads import cpu_limit, default_threads


def cgroup_v2(tmp_path, value: str):
    (tmp_path / "cpu.max").write_text(value + "\n")
    return tmp_path


def test_v2_quota(tmp_path):
    root = cgroup_v2(tmp_path, "150000 100000")
    assert cpu_limit(root) == 1.5
    assert default_threads(root) == min(2, len(os.sched_getaffinity(0)))


def test_v2_no_quota(tmp_path):
    root = cgroup_v2(tmp_path, "max 100000")
    assert cpu_limit(root) is None
    assert default_threads(root) == len(os.sched_getaffinity(0))


def test_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == 0.5
    assert default_threads(tmp_path) == 1


def test_no_cgroup_files(tmp_path):
    assert cpu_limit(tmp_path) is None
    assert default_threads(tmp_path) >= 1


@pytest.mark.parametrize(("threads", "expected"), [("1", 1), (None, None)])
def test_torch_runtime_uses_the_configured_threads(tmp_path, threads, expected):
    """A torch-based runtime sets torch's intra-op threads from server.threads (default: the CPU limit)."""
    spec = tmp_path / "modelpod.yaml"
    setting = f"server: {{threads: {threads}}}\n" if threads else ""
    spec.write_text("name: t\nmodel:\n  path: model.pt2\n" + setting)
    code = f"""
import torch
from modelpod.runtimes import default_threads, load_runtime
from modelpod.specfile import load_spec

class Net(torch.nn.Module):
    def forward(self, x):
        return x * 2

batch = torch.export.Dim("batch")
program = torch.export.export(Net(), (torch.ones(2, 3),), dynamic_shapes=({{0: batch}},))
torch.export.save(program, {str(tmp_path / "model.pt2")!r})
spec = load_spec({str(spec)!r})
load_runtime(spec.model, threads=spec.server.threads)
print(torch.get_num_threads(), default_threads())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    got, default = map(int, result.stdout.split())
    assert got == (expected if expected is not None else default)
