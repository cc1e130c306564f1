"""A `--serial PORT` link: one device per port, the port reopened when it goes away.

pyserial opens and configures the port (raw mode, baud rate); the bytes then move through
an FdStream on the event loop, so a serial link costs no thread. Each device session on
the port is one Link with a fresh RealmConnection, started by the first bytes that
arrive: an idle port holds no handshake, so it never times out, and the next session
starts on the same open port. A device that restarts sends its Hello into the session
it left: the core ends that session (RESTARTED) and hands the Hello back, and the next
session starts with it at once (docs/REALM.md, "Serial links").
"""
import asyncio

import serial

from shared.errors import INTERNAL
from shared.serial_framing import SerialFramer
from host import logs
from host.fdstream import FdStream

log = logs.get()
REOPEN_S = 1.0


class SerialPort:
    def __init__(self, realm, path, baud):
        self.realm = realm
        self.path = path
        self.baud = baud
        self.address = "serial:" + path
        self.port = None
        self.stream = None
        self.link = None
        self._session = None  # the transport of the current link
        self._lost = None
        self._stopped = False

    async def run(self):
        complained = False
        while not self._stopped:
            try:
                self.port = serial.Serial(self.path, self.baud, timeout=0, exclusive=True)
            except (OSError, ValueError, serial.SerialException) as e:
                if not complained:
                    log.warning("serial %s unavailable (%s); retrying every %.0f s",
                                self.path, e, REOPEN_S)
                    complained = True
                await asyncio.sleep(REOPEN_S)
                continue
            complained = False
            self._lost = self.realm.loop.create_future()
            self.stream = FdStream(self.realm.loop, self.port.fileno(), self._received,
                                   self._port_lost)
            log.info("serial %s open at %d baud", self.path, self.baud)
            why = await self._lost
            if not self._stopped:
                log.info("serial %s went away (%s); reopening", self.path, why)
                await asyncio.sleep(REOPEN_S)

    def stop(self):
        self._stopped = True
        if self.link is not None and not self.link.ended:
            self.link.conn.close(INTERNAL, "realm shutting down")
            self.link.flush()
        if self.stream is not None:
            self.stream.close()
            self._port_lost("realm stopping")

    def _port_lost(self, why):
        try:
            self.port.close()
        except (OSError, serial.SerialException):
            pass
        link, self.link, self._session = self.link, None, None
        if link is not None:
            link.transport_lost(why)
        if not self._lost.done():
            self._lost.set_result(why)

    def _received(self, data):
        if self.link is None:
            session = self._session = _Session(self)
            link = self.realm.open_link(session, self.address, SerialFramer())
            if self._session is session:  # not refused at once (handshake cap)
                self.link = link
        if self.link is not None:
            self.link.data_received(data)

    def session_ended(self, session, abort):
        if session is self._session:
            link, self.link, self._session = self.link, None, None
            restart = link.conn.trailing_data if link is not None else None
            if abort or restart:
                self.stream.discard_output()  # unsent, and now for nobody
            if restart:  # the device restarted: its new Hello starts the next session
                self._received(restart)


class _Session:
    """The transport one Link sees: writes reach the port while this session is current."""

    def __init__(self, port):
        self.port = port

    def write(self, data):
        if self.port._session is self:
            self.port.stream.write(data)

    def get_write_buffer_size(self):
        return self.port.stream.buffered()

    def close(self):
        self.port.session_ended(self, abort=False)

    def abort(self):
        self.port.session_ended(self, abort=True)
