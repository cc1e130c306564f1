"""The realm's HTTP API: the status page, /api/status, /api/devices, /api/events (the page's
live feed, server-sent events) and /metrics, read-only, on the realm's own event loop.

A small GET-only HTTP/1.1 server on asyncio streams, written here rather than taken from
a framework: it serves six fixed paths, one request per connection, and nothing else, so
the standard library does it in a page of code with no dependency to install, audit or
keep in step with the realm's event loop. Every bad request gets a plain HTTP error.

With a token (required for any address but loopback), every request must carry it:
`Authorization: Bearer TOKEN` (Prometheus, curl, `realm status`), or the cookie a browser
gets by opening `/?token=TOKEN` once. Compared in constant time.
"""
import asyncio
import hmac
import ipaddress
import json
import os
from urllib.parse import parse_qs, urlsplit

from host import logs
from host.fleet import StatusView
from host.metrics import CONTENT_TYPE_LATEST, Metrics

log = logs.get()

DEFAULT_PORT = 7780
MAX_HEAD = 8192  # request line and headers together
REQUEST_TIMEOUT_S = 10.0  # to send the request head: a silent client is cut off
MAX_CONNECTIONS = 64  # open at once, live feeds included
MAX_STREAMS = 32  # live feeds (the page open somewhere) at once
STREAM_BUFFER = 1 << 20  # unsent bytes a live feed may hold before it is closed
COOKIE = "realm_token"
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_PAGE_FILES = {"/": ("status.html", "text/html; charset=utf-8"),
               "/status.js": ("status.js", "text/javascript; charset=utf-8"),
               "/status.css": ("status.css", "text/css; charset=utf-8")}
_REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_SECURITY = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
             ("X-Frame-Options", "DENY"),
             ("Content-Security-Policy", "default-src 'none'; script-src 'self'; "
              "style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'"))


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class HttpError(Exception):
    def __init__(self, status, message, headers=()):
        Exception.__init__(self, message)
        self.status = status
        self.headers = headers


class Request:
    def __init__(self, method, path, query, headers):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # lower-case name -> value


class HttpApi:
    def __init__(self, realm, host, port, token=None):
        self.realm = realm
        self.host = host
        self.port = port
        self.token = token.encode() if token else None
        self.view = StatusView(realm)
        self.metrics = Metrics(realm, self.view)
        self.files = {}
        for path, (name, kind) in _PAGE_FILES.items():
            with open(os.path.join(STATIC, name), "rb") as f:
                self.files[path] = (f.read(), kind)
        self._server = None
        self._ticker = None
        self._connections = 0
        self._streams = set()  # writers of the live feeds
        self._sent_rows = None  # the device rows the feeds have, to send them when they change

    async def start(self):
        """Listen; returns the (host, port) bound."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=MAX_HEAD)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self._server.sockets[0].getsockname()[:2]

    async def close(self):
        self._server.close()
        self._ticker.cancel()
        for writer in list(self._streams):
            writer.close()

    # -- one connection ----------------------------------------------------------------
    async def _serve(self, reader, writer):
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                raise HttpError(503, "too many connections; try again later")
            request = await self._read_request(reader)
            await self._route(request, reader, writer)
        except HttpError as e:
            self._respond(writer, e.status, (str(e) + "\n").encode(), extra=e.headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception:  # a bug of ours: logged, and a plain 500 for the client
            log.exception("HTTP request failed")
            self._respond(writer, 500, b"internal error\n")
        finally:
            self._connections -= 1
            await self._close(writer)

    async def _read_request(self, reader):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise HttpError(408, "request not received in %d s" % REQUEST_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            raise HttpError(431, "request head over %d bytes" % MAX_HEAD)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise HttpError(400, "not an HTTP/1 request line")
        headers = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip():
                    raise HttpError(400, "bad header line")
                headers[name.lower()] = value.strip()
        url = urlsplit(parts[1])
        return Request(parts[0], url.path, parse_qs(url.query), headers)

    async def _route(self, request, reader, writer):
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, "read-only: GET or HEAD", (("Allow", "GET, HEAD"),))
        if self.token is not None and not self._authorised(request):
            given = request.query.get("token")
            if request.path == "/" and given and self._matches(given[0]):
                # A browser opens /?token=... once; the cookie carries it from then on.
                self._respond(writer, 303, b"", extra=(
                    ("Location", "/"), ("Set-Cookie", "%s=%s; Path=/; HttpOnly; "
                                        "SameSite=Strict" % (COOKIE, given[0]))))
                return
            raise HttpError(401, "a token is needed: send 'Authorization: Bearer TOKEN', or "
                            "open /?token=TOKEN in a browser",
                            (("WWW-Authenticate", 'Bearer realm="realm"'),))
        head = request.method == "HEAD"
        path = request.path
        if path in self.files:
            body, kind = self.files[path]
            self._respond(writer, 200, body, kind, head, _SECURITY)
        elif path == "/api/status":
            self._respond(writer, 200, _json(await self.view.status()), "application/json",
                          head)
        elif path == "/api/devices":
            await self.view.refresh()
            self._respond(writer, 200, _json(self.view.rows), "application/json", head)
        elif path == "/metrics":
            await self.view.refresh(rows=False)
            self._respond(writer, 200, self.metrics.render(), CONTENT_TYPE_LATEST, head)
        elif path == "/api/events":
            await self._stream(reader, writer, head)
        else:
            raise HttpError(404, "no such page: %s" % path)

    def _authorised(self, request):
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(given.strip()):
            return True
        for cookie in request.headers.get("cookie", "").split(";"):
            name, _, value = cookie.strip().partition("=")
            if name == COOKIE and self._matches(value):
                return True
        return False

    def _matches(self, given):
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token)

    def _respond(self, writer, status, body, kind="text/plain; charset=utf-8", head=False,
                 extra=()):
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS[status]), "Content-Type: " + kind,
                 "Content-Length: %d" % len(body), "Cache-Control: no-store",
                 "Connection: close"]
        lines += ["%s: %s" % header for header in extra]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(body)

    @staticmethod
    async def _close(writer):
        try:
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        writer.close()

    # -- the live feed -----------------------------------------------------------------
    async def _stream(self, reader, writer, head):
        """Server-sent events: `realm` every second, `devices` whenever the rows change."""
        if len(self._streams) >= MAX_STREAMS:
            raise HttpError(503, "too many live views open; try again later")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        if head:
            return
        await self.view.refresh()
        writer.write(_event("devices", self.view.rows) + _event("realm", self.view.realm_status()))
        self._streams.add(writer)
        try:
            while await reader.read(1024):  # nothing to read; b"" when the viewer leaves
                pass
        finally:
            self._streams.discard(writer)

    async def _tick(self):
        """Once a second: sample the rates, and feed the live views."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self.view.rates.sample(self.realm.stats)
                if self._streams:
                    await self.view.refresh()
                    self._feed()
                else:
                    self.view.forget_rows()
                    await self.view.refresh(rows=False)
            except Exception:  # never let the page's feed die quietly
                log.exception("status feed failed")

    def _feed(self):
        rows = self.view.rows
        data = _event("realm", self.view.realm_status())
        if rows is not self._sent_rows:
            data = _event("devices", rows) + data
        self._sent_rows = rows
        for writer in list(self._streams):
            if writer.is_closing():
                self._streams.discard(writer)
            elif writer.transport.get_write_buffer_size() > STREAM_BUFFER:
                self._streams.discard(writer)  # a viewer that does not read: let it go
                writer.transport.abort()
            else:
                writer.write(data)


def _json(value):
    return json.dumps(value, separators=(",", ":")).encode()


def _event(name, value):
    return b"event: " + name.encode() + b"\ndata: " + _json(value) + b"\n\n"


def status_url(host, port):
    """How `realm status` reaches an API listening on (host, port)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return "http://%s:%d/" % (("[%s]" % host) if ":" in host else host, port)


def fetch_status(url, token=None, timeout=5.0):
    """GET url + api/status (blocking: for the CLI). Raises OSError if nothing answers."""
    import urllib.request
    request = urllib.request.Request(url.rstrip("/") + "/api/status")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())

