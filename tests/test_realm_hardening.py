"""What an attacker can make the realm spend or lose, against a real `realm serve`
(issue 13): packets before a fault, rate limits, logs, descriptors, connection floods."""
import socket

import pytest

from shared import codec
from shared.errors import MALFORMED, SESSION_REPLACED, TOO_LARGE
from shared.events import DeliveryPacket, ProxyPassPacket
from tests.realm_helpers import RawDevice, RealmProcess
from tests.test_realm_server import check_registry


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    process = RealmProcess(tmp_path_factory.mktemp("harden") / "data", "--handshake-timeout", "3")
    yield process
    assert process.stop() == 0
    process.assert_clean_log()
    check_registry(process.data_dir)


def pair(realm):
    devices = []
    for _ in range(2):
        device_id, token = realm.add_device()
        devices.append(RawDevice(realm.port, device_id, token))
        devices[-1].handshake()
    return devices


@pytest.mark.parametrize("fault, code", [
    (b"\x00\x03\x02\x0f\x00", MALFORMED),     # a frame that does not open
    (b"\xff\xff", TOO_LARGE),                 # an oversize length prefix
    (None, SESSION_REPLACED),                 # the device's own Error
])
def test_a_packet_before_a_fault_in_the_same_read_is_relayed_and_answered(realm, fault, code):
    sender, target = pair(realm)
    sender.conn.send_proxy(target.device_id, 5, b"\x01\x00before the fault")
    if fault is None:
        sender.conn.close(code, "bye")
        sender.send_raw(sender.conn.data_to_send())
    else:
        sender.send_raw(sender.conn.data_to_send() + fault)
    got = target.pump(lambda e: isinstance(e, ProxyPassPacket))
    assert isinstance(got, ProxyPassPacket) and got.inner == b"\x01\x00before the fault"
    if fault is not None:
        report = sender.pump(lambda e: isinstance(e, DeliveryPacket))
        assert (report.msg_id, report.status) == (5, codec.DELIVERED)
        assert sender.expect_closed().code == code
    target.close()
    sender.close()
