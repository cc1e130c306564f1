"""The registry and the token hashes, with the clock passed in."""
import os
import stat
import uuid

import pytest

from host import keyfile, tokens
from shared.codec import QUEUE_FULL, QUEUED, UNKNOWN_TARGET
from host.registry import Registry, RegistryError

SENDER = uuid.uuid4().bytes
T0 = 1_700_000_000.0


@pytest.fixture
def registry(tmp_path):
    r = Registry(str(tmp_path))
    yield r
    r.close()


def test_realm_made_tokens_are_stored_as_sha256_and_checked(registry):
    device_id, token = registry.add_device(T0, name="a")
    stored = registry.device(device_id).token_hash
    assert stored.startswith("sha256$") and token not in stored
    assert not tokens.is_slow(stored) and tokens.is_generated(token)
    assert tokens.verify_token(token, stored)
    assert not tokens.verify_token(token[:-1] + ("A" if token[-1] != "A" else "B"), stored)
    assert not tokens.verify_token("short", stored)
    assert not tokens.verify_token("x" * 65, stored)
    assert not tokens.verify_token(token, "garbage")
    assert not tokens.verify_token(token, "sha256$zz")
    assert not tokens.verify_token(token, "md5$" + stored[7:])  # an unknown scheme
    new = registry.new_token(device_id)
    assert registry.device(device_id).token_hash.startswith("sha256$")
    assert tokens.verify_token(new, registry.device(device_id).token_hash)


def test_slow_hashes_are_salted_scrypt_and_still_checked():
    token = "correct horse battery staple"  # a token a person chose
    stored = tokens.slow_hash_token(token)
    assert stored.startswith("scrypt$16384$8$1$") and tokens.is_slow(stored)
    assert tokens.verify_token(token, stored) and tokens.verify_token(token.encode(), stored)
    assert not tokens.verify_token(token + "!", stored)
    assert stored != tokens.slow_hash_token(token)  # salted: no two alike
    assert not tokens.needs_rehash(token, stored)  # guessable: it keeps the slow hash
    made = tokens.new_token()
    assert tokens.needs_rehash(made, tokens.slow_hash_token(made))
    assert not tokens.needs_rehash(made, tokens.hash_token(made))


@pytest.mark.parametrize("token,generated", [
    (tokens.new_token(), True), ("A" * 43, True), ("A" * 42, False), ("A" * 44, False),
    ("A" * 42 + "B", False),  # its last character carries bits past the 32 bytes
    ("A" * 42 + "+", False), ("A" * 42 + "=", False), ("correct horse battery staple", False)])
def test_the_shape_of_a_realm_made_token(token, generated):
    assert tokens.is_generated(token) is generated


def test_a_token_hash_is_replaced_only_if_unchanged(registry):
    device_id, token = registry.add_device(T0)
    old = tokens.slow_hash_token(token)
    assert not registry.replace_token_hash(device_id, old, tokens.hash_token(token))
    registry.db.execute("UPDATE devices SET token_hash = ? WHERE id = ?", (old, device_id))
    assert registry.replace_token_hash(device_id, old, tokens.hash_token(token))
    assert registry.device(device_id).token_hash == tokens.hash_token(token)


def test_queue_keeps_order_and_survives_reopening(tmp_path):
    registry = Registry(str(tmp_path))
    target, _ = registry.add_device(T0)
    for i in range(3):
        assert registry.enqueue(target, SENDER, i, b"packet %d" % i, T0 + i) == QUEUED
    registry.close()
    registry = Registry(str(tmp_path))
    stored = registry.stored(target, T0 + 10)
    assert [(q.msg_id, q.inner) for q in stored] == [
        (0, b"packet 0"), (1, b"packet 1"), (2, b"packet 2")]
    assert registry.stored(target, T0 + 10) == stored  # kept until received
    registry.enqueue(target, SENDER, 3, b"packet 3", T0 + 11)
    registry.forget_stored(target, stored[-1].seq)
    assert [q.msg_id for q in registry.stored(target, T0 + 12)] == [3]
    registry.close()


def test_queue_is_bounded_by_count_and_bytes_keeping_the_oldest(registry):
    target, _ = registry.add_device(T0)
    for i in range(64):
        assert registry.enqueue(target, SENDER, i, b"x", T0) == QUEUED
    assert registry.enqueue(target, SENDER, 64, b"x", T0) == QUEUE_FULL
    stored = registry.stored(target, T0)
    assert [q.msg_id for q in stored] == list(range(64))
    registry.forget_stored(target, stored[-1].seq)

    big = bytes(16 * 1024)
    for i in range(4):
        assert registry.enqueue(target, SENDER, i, big, T0) == QUEUED
    assert registry.enqueue(target, SENDER, 9, b"1", T0) == QUEUE_FULL  # 64 KiB of inner
    assert registry.queued_count(target) == 4


def test_queue_entries_expire_after_a_day(registry):
    target, _ = registry.add_device(T0)
    registry.enqueue(target, SENDER, 1, b"old", T0)
    registry.enqueue(target, SENDER, 2, b"new", T0 + 23 * 3600)
    assert [q.inner for q in registry.stored(target, T0 + 24 * 3600 + 1)] == [b"new"]
    registry.enqueue(target, SENDER, 3, b"x", T0)
    assert registry.expire(T0 + 25 * 3600) == 1


def test_queue_refuses_unknown_targets_and_removal_drops_the_queue(registry):
    assert registry.enqueue(str(uuid.uuid4()), SENDER, 1, b"x", T0) == UNKNOWN_TARGET
    target, _ = registry.add_device(T0)
    registry.enqueue(target, SENDER, 1, b"x", T0)
    registry.remove_device(target)
    assert registry.queued_count(target) == 0
    with pytest.raises(RegistryError):
        registry.remove_device(target)


def test_a_key_binds_once_until_reset(registry):
    device_id, _ = registry.add_device(T0)
    assert registry.bind_key(device_id, b"k" * 32) == b"k" * 32
    assert registry.bind_key(device_id, b"j" * 32) == b"k" * 32
    registry.reset_key(device_id)
    assert registry.bound_key(device_id) is None
    assert registry.bind_key(device_id, b"j" * 32) == b"j" * 32


def test_a_second_process_sees_the_changes(tmp_path):
    server, admin = Registry(str(tmp_path)), Registry(str(tmp_path))
    version = server.data_version()
    device_id, _ = admin.add_device(T0)
    assert server.data_version() != version
    assert device_id in server.device_ids()
    server.close()
    admin.close()


def test_realm_key_file_is_private_and_stable(tmp_path):
    private, public = keyfile.load_or_create_realm_key(str(tmp_path))
    path = tmp_path / keyfile.REALM_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keyfile.load_or_create_realm_key(str(tmp_path)) == (private, public)
    assert [p.name for p in tmp_path.iterdir()] == [keyfile.REALM_KEY_FILE]  # no temp left


def test_a_schema_1_registry_with_a_name_twice_opens_with_the_later_one_renamed(tmp_path):
    import sqlite3
    db = sqlite3.connect(str(tmp_path / "realm.db"))
    db.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', "
               "token_hash TEXT, bound_key BLOB, created REAL NOT NULL, last_seen REAL, "
               "online INTEGER NOT NULL DEFAULT 0)")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    db.execute("INSERT INTO devices (id, name, created) VALUES (?, 'a', 1), (?, 'A', 2)",
               (first, second))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    registry = Registry(str(tmp_path))
    try:
        assert [(d.id, d.name) for d in registry.list_devices()] == [
            (first, "a"), (second, "A-" + second[:8])]
        assert registry.resolve("A") == first and registry.resolve(second) == second
        with pytest.raises(RegistryError, match="taken"):
            registry.add_device(T0, name="a")
    finally:
        registry.close()


def test_realm_made_tokens_never_start_with_a_dash(monkeypatch):
    """`realm send --token -x...` would read as an option; the first draws here do."""
    draws = iter(["-" + "a" * 42, "-" + "b" * 42, "c" * 43])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(draws))
    assert tokens.new_token() == "c" * 43
