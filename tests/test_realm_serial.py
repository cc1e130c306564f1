"""A device on a serial link (a pty pair) talking to a device on TCP through one realm."""
import os
import tty
import uuid

import pytest

from shared import codec
from shared.events import Delivery, Message
from host.client import DeviceState, HostDevice
from tests.realm_helpers import RealmProcess, metric, run, scrape


@pytest.fixture
def pty_realm(tmp_path):
    master, slave = os.openpty()
    tty.setraw(master)
    realm = RealmProcess(tmp_path / "data", "--serial", os.ttyname(slave))
    realm.wait_log("serial %s open" % os.ttyname(slave))
    yield realm, master
    assert realm.stop() == 0
    realm.assert_clean_log()
    os.close(master)
    os.close(slave)


def test_serial_device_talks_to_tcp_device(pty_realm):
    realm, master = pty_realm
    serial_id, serial_token = realm.add_device("on-serial")
    tcp_id, tcp_token = realm.add_device("on-tcp")

    async def body():
        over_serial = HostDevice(DeviceState(serial_id), serial_token)
        await over_serial.connect_fd(master)
        over_tcp = HostDevice(DeviceState(tcp_id), tcp_token)
        await over_tcp.connect_tcp("127.0.0.1", realm.port)

        msg_id = over_serial.send(tcp_id, b"from the wire")
        assert (await over_serial.wait_for(Delivery, 5, lambda e: e.msg_id == msg_id)).status \
            == codec.DELIVERED
        message = await over_tcp.wait_for(Message, 5)
        assert (message.peer, message.data) == (serial_id, b"from the wire")

        over_tcp.send(serial_id, b"x" * 1000)  # several COBS blocks
        message = await over_serial.wait_for(Message, 5)
        assert (message.peer, message.data) == (tcp_id, b"x" * 1000)
        over_serial.close()
        over_tcp.close()
    run(body())
    realm.wait_log("login %s (on-serial) from serial:" % uuid.UUID(bytes=serial_id))


def test_serial_garbage_is_dropped_and_the_port_keeps_serving(pty_realm):
    realm, master = pty_realm
    device_id, token = realm.add_device()
    os.write(master, bytes(range(1, 256)) + b"\x00\x05\x01\x02\x03\x04\x00" + b"\xff" * 300)

    async def body():
        device = HostDevice(DeviceState(device_id), token)
        await device.connect_fd(master)
        device.close()
    run(body())
    # Two frames fail their CRC: the bytes 1..255, and 05 01 02 03 04.
    assert metric(scrape(realm.http_port), "realm_serial_framer_drops_total") == 2


def test_a_port_is_opened_when_it_appears_and_reopened_when_it_goes_away(tmp_path):
    path = str(tmp_path / "tty")
    realm = RealmProcess(tmp_path / "data", "--serial", path)
    ptys = []
    try:
        realm.wait_log("serial %s unavailable" % path)
        device_id, token = realm.add_device()
        state = DeviceState(device_id)
        for round_ in (1, 2):
            master, slave = os.openpty()
            tty.setraw(master)
            ptys.append((master, slave))
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(os.ttyname(slave), path)
            realm.wait_log("serial %s open" % path, count=round_)

            async def body():
                device = HostDevice(state, token)
                welcome = await device.connect_fd(master)
                device.close()
                return welcome
            assert run(body()).realm_name == "realm"
            os.close(master)  # the far end goes away
            os.close(slave)
            realm.wait_log("serial %s went away" % path, count=round_)
    finally:
        assert realm.stop() == 0
    realm.assert_clean_log()

