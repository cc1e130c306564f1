"""`make demo`: a realm on its embedded defaults and two simulated devices, alice and
bob (the firmware under the MicroPython unix port), exchanging end-to-end encrypted
messages through it. Prints what each device sends and receives; exits 0 when every
message arrived, 1 otherwise. Everything lives in a temporary folder, removed at the end.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.build import build  # noqa: E402
from tools.harness import RealmProcess  # noqa: E402
from tools.simproc import ONLINE, SimDevice, write_config  # noqa: E402

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Demo:
    def __init__(self, folder):
        self.folder = folder
        self.realm = RealmProcess(os.path.join(folder, "realm-data"), start=False)
        self.devices = []
        self.names = {}
        self.announced = set()  # (device name, msg_id) of the messages the demo sent
        self.print_lock = threading.Lock()

    def start_realm(self):
        self.realm.start()
        key = self.realm.admin("key")
        say("realm", "listening on 127.0.0.1:%d, key fingerprint %s..." % (
            self.realm.port, key["fingerprint"][:16]))
        say("realm", "status page: http://127.0.0.1:%d/" % self.realm.http_port)

    def add_device(self, name):
        device = self.realm.admin("device", "add", "--name", name)
        config = write_config(os.path.join(self.folder, name + ".json"), device["id"],
                              device["token"], name, port=self.realm.port)
        self.names[device["id"]] = name
        say("realm", "registered %s as %s" % (name, device["id"]))
        sim = SimDevice(config, on_line=self.show)
        sim.name, sim.id = name, device["id"]
        self.devices.append(sim)
        return sim.start()

    def show(self, sim, line):
        """Print a device's line as it comes, peer ids shown as names. A Delivery is
        shown for the messages the demo announced (a ping's shows as its pong)."""
        line = UUID.sub(lambda m: self.names.get(m.group(0), m.group(0)), line)
        words = line.split(" ")
        if words[0] == "sent":
            self.announced.add((sim.name, words[1]))
        elif words[0] == "delivery" and (sim.name, words[1]) not in self.announced:
            return
        with self.print_lock:
            say(sim.name, describe(sim.name, line))

    def exchange(self, sender, receiver, text):
        mark = sender.mark()
        sender.command("send %s %s" % (receiver.id, text))
        msg_id = sender.wait(r"^sent (\d+) ", since=mark).group(1)
        receiver.wait(r"^message %s %s$" % (sender.id, re.escape(text)))
        sender.wait(r"^delivery %s " % msg_id, since=mark)

    def stop(self):
        for sim in self.devices:
            sim.kill()
        self.realm.stop()


def describe(name, line):
    """The remote app's terse lines, as sentences."""
    words = line.split(" ", 3)
    if words[0] == "sent":
        return "sends message %s to %s: %r" % (words[1], words[2], words[3])
    if words[0] == "message":
        return "receives from %s: %r" % (words[1], line.split(" ", 2)[2])
    if words[0] == "delivery":
        return "realm reports message %s %s" % (words[1], words[2])
    if words[0] == "pong":
        return "end-to-end ping to %s: answered in %s ms" % (words[1], words[2])
    return line[len(name) + 2:] if line.startswith(name + ": ") else line


def say(who, what):
    print("%-6s| %s" % (who, what), flush=True)


def main():
    folder = tempfile.mkdtemp(prefix="realm-demo-")
    demo = Demo(folder)
    try:
        build("unix")
        demo.start_realm()
        alice, bob = demo.add_device("alice"), demo.add_device("bob")
        for sim in (alice, bob):
            sim.wait(ONLINE)
        demo.exchange(alice, bob, "Hello Bob, this is Alice. Only you can read this.")
        demo.exchange(bob, alice, "Hi Alice! Loud and clear; the realm only relayed it.")
        mark = alice.mark()
        alice.command("ping %s" % bob.id)
        alice.wait(r"^pong ", since=mark)
        with demo.print_lock:
            print("demo: done: two devices exchanged end-to-end encrypted messages through the "
                  "realm.\n      Next: make sim CONFIG=...   make provision ...   "
                  "(docs/FIRMWARE.md)")
        return 0
    except (AssertionError, RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print("demo: FAILED: %s" % e, file=sys.stderr)
        print("realm log:\n" + demo.realm.log(), file=sys.stderr)
        return 1
    finally:
        demo.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
