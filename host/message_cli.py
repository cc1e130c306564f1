"""`realm send | listen`: a host-side device that sends one message, or prints (and
answers) the messages it receives."""
import asyncio
import json
import os
import sys

from shared.errors import ProtocolError, KEY_MISMATCH
from host import cli
from host.registry import RegistryError, label


def add_parser(sub, add):
    send = add(sub, "send", cmd_send, "send one message as a device")
    cli.device_options(send)
    cli.data_and_json(send)
    send.add_argument("--to", required=True, metavar="DEVICE", help="its id or name")
    send.add_argument("message", help="the text to send; - reads it from stdin")
    cli.cluster_flag(send, cli.NAMES_IN_CLUSTER)

    listen = add(sub, "listen", cmd_listen, "print the messages a device receives")
    cli.device_options(listen)
    cli.data_and_json(listen)
    listen.add_argument("--count", type=cli.positive(int, 1, 10 ** 9), metavar="N",
                        help="exit after N messages")
    listen.add_argument("--wait", type=cli.positive(float, 0.01, 10 ** 9), metavar="SECONDS",
                        help="exit with an error after this long without a message")
    listen.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                        help="exit when the connection ends instead of connecting again")
    listen.add_argument("--reply", metavar="COMMAND", help="run COMMAND (a shell command) for "
                        "each message, the message on its stdin, $REALM_FROM and "
                        "$REALM_FROM_NAME set; what it prints is sent back to the sender")
    listen.add_argument("--chat", action="store_true", help="also send what is typed: each "
                        "line `PEER TEXT` on stdin goes to PEER (a name or an id)")
    cli.cluster_flag(listen, cli.NAMES_IN_CLUSTER)


async def _client(args, names, on_status=None, reconnect=True):
    from host.client import RealmClient
    device_id, args.as_name = await names.named(args.as_id)
    if not args.token:
        raise cli.CliError("a token is needed: --token or REALM_TOKEN")
    args.as_id = device_id
    return RealmClient(device_id, args.token, realm=args.realm, state=args.state or "default",
                       serial=args.serial, baud=args.baud, repin=args.repin,
                       handshake_timeout_s=args.timeout, on_status=on_status,
                       reconnect=reconnect)


def _refused(error, client, args):
    """The CliError for a failure that ended the client, with the fix when there is one."""
    from host.client import describe
    if isinstance(error, ProtocolError) and error.code == KEY_MISMATCH:
        if client.realm_key_changed:
            return cli.CliError("%s; if the realm's key really changed, run again with --repin"
                            % describe(error))
        if error.remote:
            return cli.CliError("the realm holds another key for %s than the one in %s (a new "
                            "state file?); if so, on the realm: realm device reset-key %s"
                            % (label(args.as_id, args.as_name), client._state.path,
                               args.as_name or args.as_id))
    if isinstance(error, OSError):
        return cli.CliError("%s (is it running there?)" % describe(error, client.where))
    return cli.CliError(describe(error))


async def _send(args):
    async with cli.DeviceNames(args) as names:
        client = await _client(args, names, reconnect=False)
        to_id, to_name = await names.named(args.to)
    await _send_as(args, client, to_id, to_name)


async def _send_as(args, client, to_id, to_name):
    from host.client import PeerKeyChangedError
    data = sys.stdin.buffer.read() if args.message == "-" else args.message.encode()
    try:
        try:
            await asyncio.wait_for(client.start(), args.timeout)
        except asyncio.TimeoutError:
            raise cli.CliError("no answer from the realm at %s in %s s" % (client.where,
                                                                           args.timeout))
        status = await client.send(to_id, data, args.timeout)
    except asyncio.TimeoutError:
        raise cli.CliError("no Delivery report in %s s" % args.timeout)
    except PeerKeyChangedError as e:
        raise cli.CliError(str(e))
    except (ProtocolError, OSError) as e:
        raise _refused(e, client, args)
    finally:
        await client.close()
    if args.json:
        print(json.dumps({"to": to_id, "to_name": to_name, "status": status}))
    elif status.accepted:
        print("%s to %s" % (status.lower(), label(to_id, to_name)))
    if not status.accepted:
        raise cli.CliError(None if args.json else "not delivered to %s: %s"
                           % (label(to_id, to_name), status))


async def _listen(args):
    async with cli.DeviceNames(args) as names:
        await _listen_as(args, names)


async def _listen_as(args, names):
    def status(state, detail):
        if state == "online" and not args.json:
            print("online as %s at %s; waiting for messages" % (
                label(args.as_id, args.as_name), client.where), flush=True)
        elif state == "offline":
            print("realm: offline: %s" % detail, file=sys.stderr, flush=True)

    client = await _client(args, names, status, reconnect=args.reconnect)
    chat = None
    received = 0
    try:
        await client.start()
        if args.chat:
            chat = asyncio.ensure_future(_chat(client, args, names))
        while args.count is None or received < args.count:
            try:
                message = await client.receive(args.wait)
            except asyncio.TimeoutError:
                raise cli.CliError("no message in %s s" % args.wait)
            received += 1
            name = await _sender_name(names, message.peer)
            text = message.data.decode("utf-8", "replace")
            cli.emit(args, {"from": message.peer, "from_name": name, "text": text,
                        "hex": message.data.hex()},
                 "%s: %s" % (label(message.peer, name), text))
            sys.stdout.flush()
            if args.reply:
                await _reply(client, args, message, name)
    except (ProtocolError, OSError) as e:
        raise _refused(e, client, args)
    finally:
        if chat is not None:
            chat.cancel()
        await client.close()


async def _sender_name(names, device_id):
    """The sender's name, or '' (said on stderr) when the registry cannot tell right now:
    the message is shown anyway, by the sender's id."""
    try:
        return (await names.named(device_id))[1]
    except (cli.CliError, RegistryError) as e:
        print("realm: the name of %s: %s" % (device_id, e), file=sys.stderr, flush=True)
        return ""


async def _reply(client, args, message, name):
    """Run --reply's command with the message on its stdin; what it prints goes back."""
    env = dict(os.environ, REALM_FROM=message.peer, REALM_FROM_NAME=name)
    proc = await asyncio.create_subprocess_shell(
        args.reply, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
    out, _ = await proc.communicate(message.data)
    if proc.returncode != 0:
        print("realm: --reply command ended with exit code %d: nothing sent back"
              % proc.returncode, file=sys.stderr, flush=True)
        return
    if out:
        await _report_delivery(args, client.send_nowait(message.peer, out.rstrip(b"\n")),
                               client, message.peer, name)


async def _chat(client, args, names):
    """--chat: each line typed on stdin, `PEER TEXT`, is sent to PEER (a name or an id)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode("utf-8", "replace")
        if not line:
            return  # end of input: listening goes on
        peer, _, text = line.rstrip("\n").partition(" ")
        if not peer:
            continue
        try:
            peer_id, name = await names.named(peer)
        except (cli.CliError, RegistryError) as e:
            print("realm: %s" % e, file=sys.stderr, flush=True)
            continue
        asyncio.ensure_future(_report_delivery(args, client.send_nowait(peer_id, text.encode()),
                                               client, peer_id, name))


async def _report_delivery(args, msg_id, client, peer_id, name):
    """Say what became of a message sent while listening: its status, or why not."""
    from host.client import PeerKeyChangedError, describe
    status = why = None  # the realm's word on it, or why there is none
    try:
        status = await client.delivery(msg_id, args.timeout)
    except asyncio.TimeoutError:
        why = "no Delivery report in %s s" % args.timeout
    except (ProtocolError, OSError, PeerKeyChangedError) as e:
        why = "not sent: %s" % describe(e)
    if args.json:
        print(json.dumps({"to": peer_id, "to_name": name, "msg_id": msg_id,
                          "status": why or status}), flush=True)
    elif why is None:
        print("%s to %s" % (status.lower(), label(peer_id, name)), flush=True)
    else:
        print("realm: to %s: %s" % (label(peer_id, name), why), file=sys.stderr, flush=True)


def cmd_send(args):
    asyncio.run(_send(args))


def cmd_listen(args):
    asyncio.run(_listen(args))
