"""The update service's last answer before a restart (firmware/updating.py,
firmware/update_fetch.py), under CPython with a stand-in runtime: the restart waits for
the realm's Delivery of the answer, and a refusal that finds no room to be sealed is
kept on flash and said after the restart. (The end-to-end tests run the same code under
MicroPython, where whether the heap has room is a matter of luck.)"""
import asyncio
import json
import os

import pytest

from firmware import updating
from firmware.update_fetch import Fetcher
from host.updater import decode
from shared import codec, update
from shared.events import Delivery, Message
from shared.update import UpdateError

UPDATER = bytes(range(16))
UID = bytes(range(32))
UPDATER_TEXT = "00010203-0405-0607-0809-0a0b0c0d0e0f"


class Endpoint:
    def __init__(self, room):
        self.room = room  # how many answers can be sealed before MemoryError
        self.online = True
        self.sent = []

    def send_service(self, peer, service, data):
        if self.room <= 0:
            raise MemoryError("memory allocation failed, allocating 250 bytes")
        self.room -= 1
        self.sent.append((peer, service, data))
        return len(self.sent)


class Runtime:
    def __init__(self, slots, phase, room):
        self.boot = {"slots": slots, "slot": slots + "/a", "phase": phase, "updating": True,
                     "alone": True, "waiting": False, "state": {}}
        self.config = {"update": {"reuse": True}}
        self.endpoint = Endpoint(room)
        self.lines = []
        self.ms = 0

    def log(self, line):
        self.lines.append(line)

    def kick(self):
        pass

    def now_ms(self):
        return self.ms


class Listener:
    def __init__(self, runtime):
        self.runtime = runtime


class Clock:
    """asyncio.sleep_ms (MicroPython's) on the runtime's fake clock."""

    def __init__(self, runtime):
        self.runtime = runtime

    async def sleep_ms(self, ms):
        self.runtime.ms += ms
        await asyncio.sleep(0)


@pytest.fixture
def slots(tmp_path, monkeypatch):
    monkeypatch.setattr(updating, "_rmtree", lambda path: None)  # os.ilistdir: MicroPython's
    monkeypatch.setattr(updating.UpdateService, "_start_task", lambda self: None)  # its timer
    path = str(tmp_path / "slots")
    os.makedirs(path + "/b")
    return path


def fetcher(slots, phase="transfer", room=1):
    service = Fetcher(Listener(Runtime(slots, phase, room)))
    service.peer, service.id, service.version, service.new = UPDATER, UID, "2.0.0", slots + "/b"
    return service


def pending(slots):
    try:
        with open(slots + "/update.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


BAD_HASH = UpdateError(update.BAD_HASH, "app.mpy: its SHA-256 is not the signed manifest's")


def test_a_refusal_with_no_room_to_be_sealed_is_said_after_the_restart(slots):
    service = fetcher(slots, room=0)
    service._refuse(UPDATER, UID, "2.0.0", BAD_HASH)
    assert service.restarting and service.answer is None
    assert "update 2.0.0: no memory left to answer; the answer follows the restart" in \
        service.rt.lines
    assert pending(slots) == {"updater": UPDATER_TEXT, "id": UID.hex(), "version": "2.0.0",
                              "slot": slots + "/b", "phase": "refused",
                              "reason": update.BAD_HASH, "detail": str(BAD_HASH)}

    # After the restart (firmware/main.py: phase "refused" is update mode), from a fresh heap.
    again = Fetcher(Listener(Runtime(slots, "refused", room=1)))
    again.welcomed()
    (peer, service_number, data), = again.rt.endpoint.sent
    assert (peer, service_number) == (UPDATER, codec.SERVICE_UPDATE)
    assert decode(data) == (update.RESULT, (UID, update.REFUSED, update.BAD_HASH, "2.0.0",
                                            str(BAD_HASH)))
    assert again.restarting and pending(slots) is None


def test_a_refusal_said_after_a_restart_is_not_kept_again(slots):
    service = fetcher(slots, room=0)
    service._refuse(UPDATER, UID, "2.0.0", BAD_HASH)
    again = Fetcher(Listener(Runtime(slots, "refused", room=0)))
    again.welcomed()
    assert "update 2.0.0: no memory left to answer; not answered" in again.rt.lines
    assert again.restarting and pending(slots) is None  # back to the app, no loop


def test_an_install_with_no_room_to_say_so_restarts_into_its_trial(slots):
    service = fetcher(slots, room=0)
    service.pending = {"phase": "transfer", "id": UID.hex()}
    service._installed(slots + "/b")
    assert service.restarting and service.id is None
    assert pending(slots)["phase"] == "installed"  # the trial's UPDATED or ROLLED_BACK follows


def run_restart_wait(service, events):
    """_answered() with `events` given to the service as its first poll runs; -> the fake
    milliseconds it waited."""
    async def main():
        waiting = asyncio.ensure_future(service._answered())
        await asyncio.sleep(0)
        for event in events:
            service.event(event)
        await waiting
    asyncio.run(main())
    return service.rt.ms


@pytest.fixture
def clock(monkeypatch):
    def install(service):
        monkeypatch.setattr(updating, "asyncio", Clock(service.rt))
    return install


def test_the_restart_waits_for_the_realms_delivery_of_the_answer(slots, clock):
    service = fetcher(slots)
    clock(service)
    service._refuse(UPDATER, UID, "2.0.0", BAD_HASH)
    msg_id = service.answer[0]
    waited = run_restart_wait(service, [Message(UPDATER, b"x"), Delivery(msg_id + 1, 0),
                                        Delivery(msg_id, codec.DELIVERED)])
    assert service.answer is None and waited < updating._SEND_MS


def test_without_a_delivery_the_restart_waits_3_s_at_most(slots, clock):
    service = fetcher(slots)
    clock(service)
    service._refuse(UPDATER, UID, "2.0.0", BAD_HASH)
    assert run_restart_wait(service, []) == updating._SEND_MS == 3000
    assert service.answer is not None


def test_with_the_link_down_the_restart_does_not_wait(slots, clock):
    service = fetcher(slots)
    clock(service)
    service._refuse(UPDATER, UID, "2.0.0", BAD_HASH)
    service.rt.endpoint.online = False
    assert run_restart_wait(service, []) == 0


def test_a_broken_link_is_left_to_the_runtime_not_raised_into_the_transfer(slots):
    # Raised, it reached handle(), which refused the update as FAILED "OSError(32,)" and
    # deleted what was fetched: the link's end is the runtime's reader's to see.
    service = fetcher(slots)

    def broken():
        raise OSError(32, "EPIPE")
    service.rt.kick = broken
    assert service._send(UPDATER, update.get(1, 0, 10)) == 1
    assert service.id == UID and not service.restarting
