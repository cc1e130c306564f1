"""The realm's HTTP API on a real `realm serve`: /metrics after known traffic (exact
counts), /api/status and /api/devices as devices connect, report and leave, DeviceReport
edge cases on the wire, the token rule, bad requests, and `realm status`."""
import http.client
import json
import os
import platform
import re
import socket
import time
import uuid

import pytest

from shared import RELEASE, codec, crypto
from shared.errors import MALFORMED, UNEXPECTED
from shared.events import DeliveryPacket, Welcomed
from host.client import DeviceState, HostDevice
from tests.realm_helpers import RawDevice, free_port, metric, run, run_cli, scrape
from tests.test_realm_server import own_realm  # noqa: F401 (a fixture: one realm per call)

TOKEN = "s3cret-token-for-the-http-api"


def get(port, path, method="GET", headers=None):
    """(status, headers, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port, path, headers=None):
    status, _, body = get(port, path, headers=headers)
    assert status == 200, body
    return json.loads(body)


def raw_request(port, data):
    """The status line and body the server answers to raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def wait_for(check, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not so after %s s" % timeout)
        time.sleep(0.05)


def send_raw_report(raw, text):
    raw.conn._send(codec.encode(codec.PROTO_REALM, codec.DEVICE_REPORT, text))
    raw.flush()


# -- /metrics ---------------------------------------------------------------------------
def test_metrics_count_known_traffic_exactly(own_realm):
    r = own_realm()
    a_id, a_token = r.add_device("a")
    b_id, b_token = r.add_device("b")
    c_id, _ = r.add_device("c")  # never online: its packets are queued
    a = RawDevice(r.port, a_id, a_token)
    welcome = a.handshake()
    b = RawDevice(r.port, b_id, b_token)
    b.handshake()
    wrong = RawDevice(r.port, c_id, "x" * 43)
    wrong.expect_closed()  # BAD_LOGIN
    for msg_id, (target, inner) in enumerate([(b_id, b"\x01\x00one"), (b_id, b"\x01\x00two"),
                                              (b_id, b"\x01\x00three"), (c_id, b"\x01\x00x" * 5),
                                              (uuid.uuid4().bytes, b"\x01\x00?")], 1):
        a.conn.send_proxy(target, msg_id, inner)
        a.flush()
        a.pump(lambda e: isinstance(e, DeliveryPacket) and e.msg_id == msg_id)
    send_raw_report(a, '{"fw": "9.9"}')
    again = RawDevice(r.port, a_id, a_token, private=a.private, realm_public=welcome.realm_public,
                      dh2=welcome.dh2)  # the pinned path; replaces a's session
    again.handshake()
    a.expect_closed()
    # The registry's figures (the queue) are read at most once a second, off the loop.
    m = wait_for(lambda: (lambda m: metric(m, "realm_queue_packets") == 1 and m)(
        scrape(r.http_port)))
    expected = [
        ("realm_sessions", {}, 2), ("realm_handshakes_in_progress", {}, 0),
        ("realm_connects_total", {}, 4),
        ("realm_logins_total", {"path": "first_contact"}, 2),
        ("realm_logins_total", {"path": "pinned"}, 1),
        ("realm_refusals_total", {"code": "BAD_LOGIN"}, 1),
        ("realm_relayed_packets_total", {"status": "DELIVERED"}, 3),
        ("realm_relayed_packets_total", {"status": "QUEUED"}, 1),
        ("realm_relayed_packets_total", {"status": "UNKNOWN_TARGET"}, 1),
        ("realm_relayed_packets_total", {"status": "UNAVAILABLE"}, 0),
        ("realm_queue_packets", {}, 1), ("realm_queue_bytes", {}, 15),
        ("realm_session_replacements_total", {}, 1),
        ("realm_slow_reader_drops_total", {}, 0),
        ("realm_device_reports_total", {}, 1),
        ("realm_serial_framer_drops_total", {}, 0),
        ("realm_token_check_seconds_count", {}, 4),  # a, b, the wrong token, `again`
        ("realm_build_info", {"version": RELEASE, "python": platform.python_version()}, 1),
    ]
    for name, labels, value in expected:
        assert metric(m, name, **labels) == value, (name, labels)
    assert metric(m, "realm_token_check_seconds_sum") > 0
    assert not any(name.startswith("realm_") and ("device" in dict(labels) or "id" in dict(labels))
                   for name, labels in m), "no per-device labels"
    for device in (b, again):
        device.close()


# -- the JSON API --------------------------------------------------------------------
def test_api_shows_devices_connect_report_and_leave(own_realm):
    r = own_realm("--name", "home")
    a_id, a_token = r.add_device("kitchen")
    r.add_device("garage")
    devices = get_json(r.http_port, "/api/devices")
    assert [(d["name"], d["online"], d["report"]) for d in devices] == [
        ("garage", False, None), ("kitchen", False, None)]

    async def body():
        device = HostDevice(DeviceState(a_id), a_token)
        await device.connect_tcp("127.0.0.1", r.port)
        kitchen = wait_for(lambda: [d for d in get_json(r.http_port, "/api/devices")
                                    if d["name"] == "kitchen" and d["report"]])[0]
        assert kitchen["online"] and kitchen["here"] and kitchen["link"] == "tcp"
        assert kitchen["address"].startswith("127.0.0.1:")
        assert kitchen["id"] == str(uuid.UUID(bytes=a_id))
        assert kitchen["fingerprint"] == crypto.fingerprint(device.state.public).hex()
        report = kitchen["report"]
        assert report["fw"] == RELEASE and report["link"] == "tcp" and report["boot"] == 1
        assert set(report) <= {"fw", "app", "board", "up", "boot", "heap", "rssi", "link"}
        assert time.time() - kitchen["report_at"] < 30 and kitchen["since"] <= kitchen["report_at"]
        status = get_json(r.http_port, "/api/status")
        assert (status["realm"]["name"], status["realm"]["online"], status["realm"]["devices"],
                status["realm"]["sessions"]) == ("home", 1, 2, 1)
        device.close()
    run(body())
    kitchen = wait_for(lambda: [d for d in get_json(r.http_port, "/api/devices")
                                if d["name"] == "kitchen" and not d["online"]])[0]
    assert kitchen["report"]["fw"] == RELEASE, "the last report stays, with its time"
    assert kitchen["last_seen"] and kitchen["address"] is None and not kitchen["here"]


def test_live_feed_sends_devices_then_the_realm(own_realm):
    r = own_realm()
    r.add_device("kitchen")
    with socket.create_connection(("127.0.0.1", r.http_port), timeout=10) as s:
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"event: realm") < 2:  # the first at once, the next within a second
            data += s.recv(65536)
    head, _, stream = data.partition(b"\r\n\r\n")
    assert b"Content-Type: text/event-stream" in head
    events = [block.split(b"\n") for block in stream.split(b"\n\n") if block]
    assert events[0][0] == b"event: devices" and b'"name":"kitchen"' in events[0][1]
    assert events[1][0] == b"event: realm"


# -- DeviceReport on the wire ---------------------------------------------------------------
@pytest.mark.parametrize("text, why", [
    ('{"fw": "%s"}' % ("x" * 600), "over 512 bytes"),
    ("[1, 2, 3]", "not a JSON object"),
    ("fw=1.0", "not JSON"),
    ('{"heap": "lots"}', "wrong type"),
])
def test_a_bad_report_closes_that_session_malformed_with_no_traceback(own_realm, text, why):
    r = own_realm()
    device_id, token = r.add_device()
    raw = RawDevice(r.port, device_id, token)
    raw.handshake()
    send_raw_report(raw, text)
    assert raw.expect_closed().code == MALFORMED, why
    raw.close()


def test_unknown_keys_are_ignored_and_the_report_shown(own_realm):
    r = own_realm()
    device_id, token = r.add_device("odd")
    raw = RawDevice(r.port, device_id, token)
    raw.handshake()
    send_raw_report(raw, '{"fw": "<b>1.0</b>", "colour": "blue", "heap": 1024}')
    shown = wait_for(lambda: get_json(r.http_port, "/api/devices")[0]["report"])
    assert shown == {"fw": "<b>1.0</b>", "heap": 1024}
    raw.close()


def test_a_report_before_welcome_is_unexpected(own_realm):
    r = own_realm()
    device_id, token = r.add_device()
    raw = RawDevice(r.port, device_id, token)
    raw.sock.settimeout(5)
    while not raw.conn._sealed:  # until the device has its DeviceLogin ready to send
        raw.conn.receive_data(raw.sock.recv(65536), raw.now())
        if not raw.conn._sealed:
            raw.flush()
    raw.conn._send(codec.encode(codec.PROTO_REALM, codec.DEVICE_REPORT, "{}"))
    raw.flush()  # the DeviceLogin and the report, before any answer to the login
    error = raw.expect_closed()
    assert error.code == UNEXPECTED, error
    raw.close()


# -- the token rule and bad requests -----------------------------------------------------
def test_binding_beyond_loopback_needs_a_token(tmp_path):
    port = free_port()
    code, _, err = run_cli("serve", "--listen", "127.0.0.1:%d" % free_port(), "--data",
                           str(tmp_path / "d"), "--http", "0.0.0.0:%d" % port)
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("realm: --http 0.0.0.0:%d would show the fleet" % port)
    assert "--http-token" in err and len(err.strip().splitlines()) == 1


def test_with_a_token_every_request_must_carry_it(own_realm):
    # Port 0: the realm takes a free one and says which. A port picked beforehand can be
    # taken meanwhile on 0.0.0.0 by any connection's local end (seen in full runs).
    r = own_realm("--http", "0.0.0.0:0", "--http-token", TOKEN)
    found = re.search(r"status page and /metrics on http://0\.0\.0\.0:(\d+)/ \(bearer token "
                      r"required\)", r.log())
    assert found, r.log()
    port = int(found.group(1))
    for path in ("/", "/metrics", "/api/status", "/nope"):
        status, headers, _ = get(port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
    assert get(port, "/api/status", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert get(port, "/metrics", headers={"Authorization": "Bearer " + TOKEN})[0] == 200
    status, headers, _ = get(port, "/?token=" + TOKEN)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert get(port, "/", headers={"Cookie": cookie})[0] == 200
    assert get(port, "/?token=wrong")[0] == 401
    code, out, err = run_cli("status", "--data", r.data_dir, "--url", "http://127.0.0.1:%d/"
                             % port)
    assert code == 1 and "wants its HTTP token" in err
    code, out, err = run_cli("status", "--data", r.data_dir, "--token", TOKEN, "--json")
    assert code == 0 and json.loads(out)["realm"]["source"] == "realm", err


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /nope HTTP/1.1\r\n\r\n", "404 Not Found"),
    (b"POST /api/status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "405 Method Not Allowed"),
    (b"DELETE / HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n",
     "431 Request Header Fields Too Large"),
    (b"hello there\r\n\r\n", "400 Bad Request"),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request"),
    (b"GET http://elsewhere/ HTTP/1.1\r\n\r\n", "400 Bad Request"),
    (b"\xff\xfe\x00\x01 / HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
])
def test_bad_requests_get_plain_http_errors(own_realm, request_bytes, status):
    r = own_realm()
    line, body = raw_request(r.http_port, request_bytes)
    assert line == "HTTP/1.1 " + status
    assert b"Traceback" not in body and body.endswith(b"\n")


def test_pages_and_head(own_realm):
    r = own_realm()
    status, headers, body = get(r.http_port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/status.js"' in body
    for path in ("/status.js", "/status.css"):
        assert get(r.http_port, path)[0] == 200
    status, headers, body = get(r.http_port, "/api/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_http_off_serves_nothing(own_realm):
    r = own_realm("--http", "off")
    assert "status page" not in r.log()
    assert not os.path.exists(os.path.join(r.data_dir, "realm.http"))
    code, out, err = run_cli("status", "--data", r.data_dir)
    assert code == 0 and out.splitlines()[0] == (
        "from the registry (the realm serving %s has its HTTP API off): online as the running "
        "realm last wrote it" % r.data_dir), err


# -- realm status ------------------------------------------------------------------------
def test_realm_status_from_the_api_then_from_the_registry(own_realm):
    r = own_realm("--name", "home")
    device_id, token = r.add_device("kitchen")
    raw = RawDevice(r.port, device_id, token)
    raw.handshake()
    send_raw_report(raw, '{"fw": "1.2.0", "heap": 41200, "rssi": -61}')
    wait_for(lambda: get_json(r.http_port, "/api/devices")[0]["report"])
    code, out, err = run_cli("status", "--data", r.data_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("realm home %s, up " % RELEASE) and "HTTP API" in lines[0]
    assert "1 of 1 devices online" in out
    row = [line for line in lines if line.startswith("kitchen")][0].split()
    assert row[1:3] == [str(uuid.UUID(bytes=device_id)), "online"]
    assert "1.2.0" in row and "41200" in row and "-61" in row
    as_json = json.loads(run_cli("status", "--data", r.data_dir, "--json")[1])
    assert as_json["devices"][0]["report"]["fw"] == "1.2.0"
    raw.close()
    assert r.stop() == 0
    assert not os.path.exists(os.path.join(r.data_dir, "realm.http")), "removed at shutdown"
    code, out, err = run_cli("status", "--data", r.data_dir)
    assert code == 0, err
    assert out.splitlines()[0] == "from the registry (no realm is serving %s)" % r.data_dir
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("kitchen")] == [
        ["kitchen", str(uuid.UUID(bytes=device_id)), "offline"]]
    as_json = json.loads(run_cli("status", "--data", r.data_dir, "--json")[1])
    assert as_json["realm"]["source"] == "registry"
    r.start()  # the fixture stops it again


def test_realm_status_without_a_realm_folder_says_so(tmp_path):
    code, out, err = run_cli("status", "--data", str(tmp_path / "none"))
    assert code == 1 and err.startswith("realm: no realm in %s " % (tmp_path / "none"))
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "none"), "status makes no realm"


def test_a_device_without_reports_is_shown_without_one(own_realm):
    """A device that sends no report is shown without one."""
    r = own_realm()
    device_id, token = r.add_device("quiet")
    raw = RawDevice(r.port, device_id, token)
    assert isinstance(raw.handshake(), Welcomed)
    rows = wait_for(lambda: [d for d in get_json(r.http_port, "/api/devices") if d["online"]])
    assert rows[0]["report"] is None and rows[0]["report_at"] is None
    raw.close()


def test_device_rows_are_built_only_for_those_who_read_them():
    """/metrics and the once-a-second tick read only the queue's totals while nobody has
    the page open; the device rows (18 MB at 10,000 devices) are dropped until asked for."""
    from types import SimpleNamespace
    from host.fleet import StatusView
    listed = []

    class Store:
        async def list_devices(self):
            listed.append(1)
            return []

        async def queue_totals(self):
            return (3, 300)
    realm = SimpleNamespace(public=bytes(32), changes=0, store=Store(), reports={},
                            router=SimpleNamespace(links=list))
    view = StatusView(realm)

    async def main():
        assert await view.refresh(rows=False) and view.queue == (3, 300)
        assert view.rows is None and listed == []
        await view.refresh()  # the page, /api/status: rows, even if the queue is fresh
        assert view.rows == [] and listed == [1]
        view.forget_rows()
        assert view.rows is None
    run(main())
