"""The realm bench still runs (a short smoke run; its figures are not checked here)."""
import asyncio
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_realm_quick_run_prints_its_table():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "realm.py"), "--quick",
                          "--no-mosquitto"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for heading in ("handshakes/s, reconnect", "300 sessions", "login under a connection flood",
                    "pairs streaming", "page open", "realm (hops sealed", "with admin loops",
                    "logged in again"):
        assert heading in run.stdout, run.stdout


def profile_output(script, *args):
    """What a bench/ script on the in-process realm prints (it must exit 0)."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script)] + list(args),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_relay_profile_runs_on_the_in_process_realm():
    out = profile_output("relay_profile.py", "--packets", "320", "--rounds", "2")
    assert "2 rounds of 320 packets" in out, out


def test_login_profile_runs_on_the_in_process_realm():
    out = profile_output("login_profile.py", "--reconnects", "80", "--rounds", "2")
    assert "2 rounds of 80 pinned reconnects" in out, out


def test_a_prepared_bench_ephemeral_key_serves_one_connection_only():
    """The timed phases prepare each bench device's next ephemeral key pairs before they
    start: each of the next connections' Hello carries one of them, the one after those
    a fresh one."""
    from bench.realm_clients import BenchDevice, Identity
    from shared import codec
    from shared.framing import StreamFramer

    class Wire:
        def __init__(self):
            self.data = b""

        def write(self, data):
            self.data += data

        def start(self, device):
            pass

    async def hello_ephemeral(identity):
        wire = Wire()
        BenchDevice(identity).start(wire)
        return codec.decode(StreamFramer().feed(wire.data)[0])[1][3]

    async def main():
        identity = Identity()
        identity.prepare(2)
        prepared = {public for _, public in identity.ephemerals}
        sent = [await hello_ephemeral(identity) for _ in range(3)]
        assert set(sent[:2]) == prepared and len(prepared) == 2 and sent[2] not in prepared
    asyncio.run(main())
