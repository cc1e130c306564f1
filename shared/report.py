# A device's DeviceReport (PROTOCOL.md section 7), sans-IO: a DeviceConnection that sends
# one right after Welcome and then once a minute. A module of its own, so that a
# device that sends no report does not carry this code in its heap.
import json

from shared import codec
from shared.compat import const
from shared.device import DeviceConnection

# At most one a minute (section 7). Here rather than in shared/protocol.py: only this
# module uses it, and a private const costs a device no heap.
_REPORT_PERIOD_MS = const(60000)


class ReportingConnection(DeviceConnection):
    """DeviceConnection(*args, **settings) plus `reporter`: a function returning the report
    to send, a dict of section 7's keys that encodes to at most MAX_REPORT bytes of JSON."""

    def __init__(self, reporter, *args, **settings):
        DeviceConnection.__init__(self, *args, **settings)
        self._reporter = reporter
        self._report_at = None  # when the next report is due

    def send_report(self, report):
        """Send one DeviceReport now; ValueError if its JSON is over MAX_REPORT bytes (the
        device's own mistake: nothing is sent)."""
        self._require_established()
        text = json.dumps(report)
        size = len(text.encode())
        if size > codec.MAX_REPORT:
            raise ValueError("DeviceReport of %d bytes, over %d" % (size, codec.MAX_REPORT))
        self._send(codec.encode(codec.PROTO_REALM, codec.DEVICE_REPORT, text))

    def tick(self, now):
        events = DeviceConnection.tick(self, now)
        if self._report_at is not None and now >= self._report_at and not self.closed:
            self._report()
        return events

    def next_deadline(self):
        deadline = DeviceConnection.next_deadline(self)
        if deadline is not None and self._report_at is not None and self._report_at < deadline:
            return self._report_at
        return deadline

    def _on_sealed(self, packet_id, fields, events):
        welcome = not self.established
        DeviceConnection._on_sealed(self, packet_id, fields, events)
        if welcome and self.established:
            # Due at once: the shell's next tick sends it (next_deadline() is now), once the
            # Welcome is handled, rather than here, on top of the heap the receiving holds.
            self._report_at = self._now

    def _report(self):
        self._report_at = self._now + _REPORT_PERIOD_MS
        self.send_report(self._reporter())
