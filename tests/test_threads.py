"""The thread policy: OpenMP threads wait passively (a busy-waiting default collapses under load,
benchmarks/load.py), unless the user chose otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

CODE = "import impactreg, os, torch; print(os.environ['OMP_WAIT_POLICY'])"


def _policy(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_openmp_waits_passively_by_default():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"


def test_a_users_wait_policy_wins():
    assert _policy(dict(os.environ, OMP_WAIT_POLICY="ACTIVE")) == "ACTIVE"
