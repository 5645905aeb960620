"""Thread settings that hold on a busy machine: passive OpenMP waiting, the CPUs this process may use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audit import threads
from audit.errors import InputError


def test_the_usable_cpus_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cpus() == 1


@pytest.mark.parametrize("cpu_max, expected", [("max 100000", 2), ("50000 100000", 1), ("150000 100000", 1),
                                               ("200000 100000", 2)])
def test_a_cgroup_quota_caps_the_usable_cpus(tmp_path, monkeypatch, cpu_max, expected):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(threads, "_CGROUP_V2", tmp_path / "cpu.max")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads.usable_cpus() == expected


def test_idle_threads_wait_passively_unless_the_user_chose_otherwise():
    env: dict[str, str] = {}
    threads.prepare_environment(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_cli_sets_the_wait_policy_before_anything_loads_torch():
    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); sys.argv = ['audit', '--version']\n"
            "import audit.cli\n"
            "try:\n    audit.cli.main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["PASSIVE", "False"]


def test_threads_are_applied_to_torch_and_checked():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InputError, match="--threads 0"):
        threads.set_threads(0)


def test_threads_option_is_offered_by_every_command_that_computes():
    from audit.cli import cli

    for words in (("run",), ("embed",), ("generator", "train")):
        command = cli
        for w in words:
            command = command.commands[w]
        assert "--threads" in {o for p in command.params for o in getattr(p, "opts", [])}, words
