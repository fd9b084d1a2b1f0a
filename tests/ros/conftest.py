"""Shared helpers for the ROS 2 tests: an isolated DDS domain per test run, a context per test."""
from __future__ import annotations

import os
import random
import time
from typing import Callable

import pytest

rclpy = pytest.importorskip("rclpy", reason="the ROS 2 wheels (pip install 'molmo-edge[ros]') are not installed")


@pytest.fixture(scope="session")
def ros_env():
    """Environment for every ROS process of this test run: a random domain id (no crosstalk with
    other runs on the machine) and discovery limited to this host."""
    env = {
        "ROS_DOMAIN_ID": str(random.randint(100, 200)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def ros_context(ros_env):
    """A fresh rclpy context for one test, shut down afterwards."""
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    yield context
    context.try_shutdown()


def _spin_until(executor, predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


@pytest.fixture
def spin_until():
    """`spin_until(executor, predicate, timeout_s)`: spin until predicate() is true or time runs
    out; returns predicate()."""
    return _spin_until
