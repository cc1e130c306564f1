"""The updater's connection (host/updater.py) keeps the devices' reconnect policy
(shared/connection.py): it tries again after a lost link or a timeout, stops on a
refusal, and starts its backoff over once connected. And it sends a device that has
answered no more chunks."""
import asyncio

import pytest

from shared.connection import Reconnect
from shared.errors import BAD_LOGIN, RATE_LIMITED, TIMEOUT, ProtocolError
from host import updater as updating
from host.updater import Updater
from shared import update
from tests.realm_helpers import run


class _Endpoint:
    online = False


class _Device:
    endpoint = _Endpoint()


def updater(outcomes):
    """An Updater whose connect() meets `outcomes` in turn (an exception, or None: online),
    on a policy of milliseconds; -> (updater, log lines)."""
    device, lines = _Device(), []
    device.endpoint = _Endpoint()

    async def connect():
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        device.endpoint.online = True
    u = Updater(device, connect, log=lines.append)
    u._reconnect = Reconnect(min_ms=1, max_ms=4, auth_ms=10000, randint=lambda low, high: high)
    return u, lines


def test_it_connects_again_after_lost_links_and_timeouts_then_starts_over():
    u, lines = updater([OSError("connection refused"), asyncio.TimeoutError(),
                        ProtocolError(TIMEOUT, "handshake not finished in time", True), None])

    async def body():
        return [await u._online() for _ in range(4)] + [await u._online()]
    assert run(body()) == [False, False, False, True, False]  # the last: online already
    assert len(lines) == 3 and all("connecting again in" in line for line in lines)
    assert u._reconnect.failures == 0


@pytest.mark.parametrize("code", [BAD_LOGIN, RATE_LIMITED])
def test_a_refusal_ends_it(code):
    u, lines = updater([OSError("reset"), ProtocolError(code, "no", True)])

    async def body():
        assert await u._online() is False
        await u._online()
    with pytest.raises(ProtocolError) as refused:
        run(body())
    assert refused.value.code == code and len(lines) == 1


def test_a_device_that_has_answered_gets_no_more_chunks():
    # A Get still on its way when the device answered (asked again after a stall, say)
    # must not make the updater send into the device's restart.
    sent = []

    class Device(_Device):
        def send_service(self, peer, service, data):
            sent.append(data)

    u = Updater(Device(), None)
    u.bundle, u.tag = bytes(range(256)) * 4, 7
    t = updating.Target(bytes(16), "kiln")
    by_id = {t.id: t}
    get = bytes((update.GET,)) + (7).to_bytes(4, "big") + (0).to_bytes(4, "big") + \
        (100).to_bytes(2, "big")
    u._handle(updating.ServiceMessage(t.id, get), by_id)
    assert (t.state, t.sent, len(sent)) == (updating.SENDING, 100, 1)
    result = bytes((update.RESULT,)) + bytes(32) + bytes((update.REFUSED, update.BAD_HASH)) + \
        update.str16("2.0.0") + update.str16("damaged")
    u._handle(updating.ServiceMessage(t.id, result), by_id)
    u._handle(updating.ServiceMessage(t.id, get), by_id)
    assert (t.state, t.reason, t.sent, len(sent)) == (updating.REFUSED, "BAD_HASH", 100, 1)
