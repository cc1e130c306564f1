"""`make demo`, the README's first command: a realm and two simulated devices exchange
end-to-end encrypted messages, and it exits 0."""
from tests.fw_helpers import make


def test_make_demo_exchanges_messages_and_exits_0():
    code, out = make("demo")
    assert code == 0, out
    assert "bob   | receives from alice: 'Hello Bob" in out
    assert "alice | receives from bob: 'Hi Alice!" in out
    assert "alice | end-to-end ping to bob: answered in" in out
    assert "demo: done" in out
