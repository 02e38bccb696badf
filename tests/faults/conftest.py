"""Fault injection on a multi-node Ray cluster on this machine (a head with no CPUs, two 1-CPU
worker nodes) with the real PostgreSQL and SQLite; each test ends with the exactly-once invariant
(tests/support/invariants.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.cli import driver, write_study  # noqa: F401
from tests.support.db import query  # noqa: F401
from tests.support.invariants import (OF_STUDY, assert_exactly_once, cells_where, epochs_recorded,  # noqa: F401
                                      finished, snapshot)
from tests.support.ray import RayNode, free_port
from tests.support.wait import wait_for  # noqa: F401


class Cluster:
    def __init__(self):
        self.head = RayNode(head_port=free_port(), num_cpus=0)  # drivers attach here; cells run on workers
        self.workers = [self.add_worker(), self.add_worker()]

    @property
    def address(self) -> str:
        return self.head.address

    def add_worker(self) -> RayNode:
        return RayNode(address=self.head.address, num_cpus=1)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop(timeout=5)  # a node whose head is dead may not stop cleanly: it is killed


@pytest.fixture(scope="module")
def cluster(ray_test_env):
    nodes = Cluster()
    yield nodes
    nodes.stop()


def pg_restart() -> None:
    """Restart the local PostgreSQL server (every connection to it drops)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   capture_output=True, timeout=60)
