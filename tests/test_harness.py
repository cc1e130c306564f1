"""The shared realm launcher (tools/harness.py) that tests, benchmarks and the demo use."""
import socket

from tools import harness


def test_a_first_start_whose_port_was_taken_meanwhile_starts_on_fresh_ports(tmp_path, monkeypatch):
    # free_port's answer can be taken before the realm binds it (parallel runs, client
    # sockets): the launcher must choose again rather than fail the test that started it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        answers = iter([taken_port, taken_port])
        real_free_port = harness.free_port
        monkeypatch.setattr(harness, "free_port", lambda: next(answers, None) or real_free_port())
        realm = harness.RealmProcess(tmp_path / "data")
        try:
            assert realm.port != taken_port and realm.http_port != taken_port
            assert "already in use" in realm.log().lower()
            assert realm.log().count("listening on") == 1
        finally:
            assert realm.stop() == 0
