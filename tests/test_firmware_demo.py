"""`make demo`, the README's first command: a realm and two simulated devices exchange
end-to-end encrypted messages, and it exits 0."""
import re

from tests.fw_helpers import make


def test_make_demo_exchanges_messages_and_exits_0():
    code, out = make("demo")
    assert code == 0, out
    assert "bob   | receives from alice: 'Hello Bob" in out
    assert "alice | receives from bob: 'Hi Alice!" in out
    assert "alice | end-to-end ping to bob: answered in" in out
    assert "demo: done" in out
    # Every Delivery it reports is for a message it announced first, on the same device.
    announced = set()
    for line in out.splitlines():
        who, _, what = line.partition(" | ")
        sent = re.match(r"sends message (\d+) ", what)
        if sent:
            announced.add((who, sent.group(1)))
        reported = re.match(r"realm reports message (\d+) ", what)
        if reported:
            assert (who, reported.group(1)) in announced, out
    # Device lines say which device speaks, never "realm:" (that is the realm's).
    assert "| realm: " not in out and "alice | online: realm 'realm' at 127.0.0.1:" in out
