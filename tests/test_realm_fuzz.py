"""Whatever a client sends, the realm answers or closes: no traceback in its log, no
harm to the registry, and the other devices go on being served. Checked after every
example, so that a failure shrinks to the input that caused it."""
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shared.events import PeerKeyPacket
from tests.realm_helpers import RawDevice, check_registry, checked_realm, hello_bytes

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    yield from checked_realm(tmp_path_factory.mktemp("fuzz"), "--handshake-timeout", "1")


def check_after_example(realm):
    assert realm.proc.poll() is None, "the realm exited:\n" + realm.log()
    realm.assert_clean_log()
    check_registry(realm.data_dir, running=True)


def send_and_drain(realm, data):
    with socket.create_connection(("127.0.0.1", realm.port)) as sock:
        sock.settimeout(3)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(realm, data):
    send_and_drain(realm, data)
    check_after_example(realm)


@FUZZ
@given(st.data())
def test_mutated_hello(realm, data):
    hello = bytearray(hello_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(hello) - 1))
        hello[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(hello)))
    send_and_drain(realm, bytes(hello[:cut]) + data.draw(st.binary(max_size=40)))
    check_after_example(realm)


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_garbage_after_login(realm, garbage):
    device_id, token = realm.add_device()
    raw = RawDevice(realm.port, device_id, token)
    raw.handshake()
    raw.send_raw(garbage)
    raw.close()
    check_after_example(realm)


def test_the_realm_still_serves_after_the_fuzzing(realm):
    device_id, token = realm.add_device()
    raw = RawDevice(realm.port, device_id, token)
    raw.handshake()
    raw.conn.request_peer_key(device_id)
    raw.flush()
    assert raw.pump(lambda e: isinstance(e, PeerKeyPacket)).key == raw.public
    raw.close()
