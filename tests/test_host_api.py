"""The host API (docs/HOST_API.md): one session that listens and sends, connecting again
by itself; and `realm listen` answering (--reply, --chat), waiting for a realm that is not
up yet, and saying when it is back."""
import asyncio
import json
import os
import re
import subprocess
import sys

import pytest

from host.client import DeliveryStatus, RealmClient, describe
from shared import codec
from shared.errors import ProtocolError
from tests.realm_helpers import RealmProcess, realm_command, run, run_cli
from tools.simproc import ROOT


@pytest.fixture
def realm(tmp_path):
    process = RealmProcess(tmp_path / "data")
    yield process
    process.stop()
    process.assert_clean_log()


def add(realm, name):
    code, out, err = run_cli("device", "add", "--name", name, "--data", realm.data_dir, "--json")
    assert code == 0, err
    return json.loads(out)


def client(realm, device, tmp_path, **kw):
    return RealmClient(device["id"], device["token"], realm=("127.0.0.1", realm.port),
                       state=str(tmp_path / (device["name"] + ".json")), **kw)


async def ask(realm, asker, tmp_path, to, text):
    """`asker` sends text to `to` and waits for an answer: (from, data)."""
    async with client(realm, asker, tmp_path) as device:
        assert await device.send(to["id"], text) == "DELIVERED"
        answer = await device.receive(10)
        return answer.peer, answer.data


def test_a_delivery_status_is_its_name_with_the_codec_code():
    names = ["DELIVERED", "QUEUED", "UNKNOWN_TARGET", "DENIED", "QUEUE_FULL", "TOO_LARGE",
             "UNAVAILABLE", "STATUS_7"]
    for code, name in enumerate(names):
        status = DeliveryStatus(code)
        assert (status, status.code, json.dumps(status)) == (name, code, '"%s"' % name)
        assert status.accepted == (code in (codec.DELIVERED, codec.QUEUED))


def test_one_session_listens_and_sends_and_comes_back_after_a_realm_restart(realm, tmp_path):
    a, b = add(realm, "a"), add(realm, "b")
    seen = []

    async def body():
        async with client(realm, a, tmp_path) as one, \
                client(realm, b, tmp_path, on_status=lambda s, d: seen.append(s)) as two:
            status = await one.send(b["id"], b"hello")
            assert (status, status.code, status.accepted) == ("DELIVERED", codec.DELIVERED, True)
            message = await two.receive(5)
            assert (message.peer, message.data) == (a["id"], b"hello")
            # The same session answers: no second login, no SESSION_REPLACED.
            assert await two.send(message.peer, b"HELLO") == "DELIVERED"
            assert (await one.receive(5)).data == b"HELLO"
            assert await one.ping(b["id"], 5) is not None

            await asyncio.get_running_loop().run_in_executor(None, realm.restart)
            await one.wait_online()
            await two.wait_online()
            assert await one.send(b["id"], b"after the restart", 10) == "DELIVERED"
            assert (await two.receive(5)).data == b"after the restart"
    run(body(), 60)
    assert seen[:2] == ["connecting", "online"] and "offline" in seen
    assert seen.count("online") == 2
    assert realm.log().count("login %s (b)" % b["id"]) == 2  # one per realm run


def test_it_waits_for_a_realm_that_is_not_up_yet_and_stops_on_a_refusal(realm, tmp_path):
    a, fresh = add(realm, "a"), add(realm, "fresh")
    realm.stop()

    async def body():
        early = client(realm, a, tmp_path)
        starting = asyncio.ensure_future(early.start())
        await asyncio.sleep(1.5)
        assert not starting.done()  # refused connections are waited out
        await asyncio.get_running_loop().run_in_executor(None, realm.start)
        await asyncio.wait_for(starting, 15)
        assert early.online
        await early.close()

        wrong = RealmClient(fresh["id"], "w" * 43, realm=("127.0.0.1", realm.port),
                            state=None)
        with pytest.raises(ProtocolError) as refused:
            await asyncio.wait_for(wrong.start(), 15)
        assert describe(refused.value).startswith("the realm said BAD_LOGIN")
        with pytest.raises(ProtocolError):
            await wrong.receive()
        await wrong.close()
    run(body(), 60)


def test_the_documented_example_answers_each_message(realm, tmp_path):
    with open(os.path.join(ROOT, "docs", "HOST_API.md")) as f:
        example = re.search(r"```python\n(# echo\.py.*?)```", f.read(), re.S).group(1)
    script = tmp_path / "echo.py"
    script.write_text(example.replace('("127.0.0.1", 7711)', '("127.0.0.1", %d)' % realm.port))
    echo, a = add(realm, "echo"), add(realm, "a")
    proc = subprocess.Popen([sys.executable, str(script), echo["id"]], cwd=ROOT,
                            env=dict(os.environ, REALM_TOKEN=echo["token"], HOME=str(tmp_path),
                                     PYTHONPATH=ROOT, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        realm.wait_log("login %s (echo)" % echo["id"])

        assert run(ask(realm, a, tmp_path, echo, b"shout this"), 30) == (echo["id"],
                                                                        b"SHOUT THIS")
        out = ""
        for line in proc.stdout:  # the answer's Delivery may follow the answer itself
            out += line
            if line.startswith("answer "):
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "from %s shout this\nanswer DELIVERED\n" % a["id"] in out, out


def listen(realm, device, tmp_path, *extra, **kw):
    return subprocess.Popen(
        realm_command() + ["listen", "--as", device["name"], "--data", realm.data_dir,
                           "--realm", "127.0.0.1:%d" % realm.port,
                           "--state", str(tmp_path / ("cli-" + device["name"] + ".json"))]
        + list(extra), env=dict(os.environ, REALM_TOKEN=device["token"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_realm_listen_answers_with_reply_and_sends_what_is_typed_with_chat(realm, tmp_path):
    a, b, c = add(realm, "a"), add(realm, "b"), add(realm, "c")
    replier = listen(realm, b, tmp_path, "--count", "1", "--reply",
                     'printf "%s says: " "$REALM_FROM_NAME"; tr a-z A-Z')
    chatter = listen(realm, c, tmp_path, "--chat", stdin=subprocess.PIPE)
    try:
        realm.wait_log("login %s (b)" % b["id"])
        realm.wait_log("login %s (c)" % c["id"])

        assert run(ask(realm, a, tmp_path, b, b"hello"), 30) == (b["id"], b"a says: HELLO")

        async def typed():
            async with client(realm, a, tmp_path) as device:
                chatter.stdin.write("a typed by c\n")
                chatter.stdin.flush()
                message = await device.receive(10)
                return message.peer, message.data
        assert run(typed(), 30) == (c["id"], b"typed by c")
        out, err = replier.communicate(timeout=15)
        assert replier.returncode == 0, err
        assert "%s (a): hello" % a["id"] in out and "delivered to %s (a)" % a["id"] in out
    finally:
        chatter.terminate()
        replier.kill()
    out = chatter.communicate(timeout=10)[0]
    assert "delivered to %s (a)" % a["id"] in out, out


def test_realm_listen_waits_for_the_realm_and_says_when_it_is_back(realm, tmp_path):
    b = add(realm, "b")
    realm.stop()
    listener = listen(realm, b, tmp_path, "--count", "1")
    try:
        listener.wait(2.5)
        pytest.fail("listen exited while the realm was down: %s" % (listener.communicate(),))
    except subprocess.TimeoutExpired:
        pass  # still waiting, as it should
    realm.start()
    realm.wait_log("login %s (b)" % b["id"], timeout=20)
    realm.restart()
    realm.wait_log("login %s (b)" % b["id"], count=2, timeout=20)
    a = add(realm, "a")
    code, out, err = run_cli("send", "--as", "a", "--token", a["token"], "--to", "b", "--data",
                             realm.data_dir, "--realm", "127.0.0.1:%d" % realm.port, "--state",
                             str(tmp_path / "a.json"), "-", input_text="from stdin\n")
    assert code == 0, err
    out, err = listener.communicate(timeout=20)
    assert listener.returncode == 0, err
    assert out.count("online as %s (b) at 127.0.0.1:%d; waiting for messages"
                     % (b["id"], realm.port)) == 2, out
    assert "realm: offline: " in err and "connecting again in" in err
    assert "%s (a): from stdin\n" % a["id"] in out  # `send -` sent what stdin held
