"""Test servers get ports outside the kernel's ephemeral range, one block per xdist worker; the
media server's readiness asks whether *its* process listens, not whether anything answers."""

from __future__ import annotations

import os
import socket

import pytest

from livedub.orchestrator.media_server import listens_on
from livedub.sts import testing
from livedub.sts.testing import TEST_PORT_BASE, TEST_PORT_BLOCK, free_port, free_port_range


def _ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(TEST_PORT_BASE <= p < _ephemeral_low() for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))


def test_each_xdist_worker_has_its_own_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "_next_port", {})
    blocks = set()
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        blocks.add((free_port() - TEST_PORT_BASE) // TEST_PORT_BLOCK)
    assert len(blocks) == 3


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "_next_port", {})
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    first = free_port()
    monkeypatch.setattr(testing, "_next_port", {})  # start over: `first` is next again
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))
        s.listen()
        assert free_port() != first


def test_listens_on_is_about_the_process_holding_the_socket() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listens_on(os.getpid(), "127.0.0.1", port)
        assert not listens_on(os.getpid(), "127.0.0.1", port + 1 if port < 65535 else port - 1)
    assert not listens_on(os.getpid(), "127.0.0.1", port)


def test_a_range_is_consecutive_inside_one_block_and_not_handed_out_again() -> None:
    low, high = free_port_range(10)
    assert high - low == 9 and TEST_PORT_BASE <= low < _ephemeral_low()
    assert (low - TEST_PORT_BASE) // TEST_PORT_BLOCK == (high - TEST_PORT_BASE) // TEST_PORT_BLOCK
    assert not low <= free_port() <= high


def test_udp_ports_come_from_the_same_block() -> None:
    tcp = free_port()
    udp = free_port(kind=socket.SOCK_DGRAM)
    assert udp != tcp and TEST_PORT_BASE <= udp < _ephemeral_low()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp))
