"""/metrics in the Prometheus text format: the node's counters and gauges, no per-device
labels (a fleet of thousands would be thousands of series).

A collector reads the realm's plain counters (server.Stats) when Prometheus scrapes:
nothing on the relay path calls into prometheus_client, whose metric objects take a lock
per update. The process collector adds CPU, memory and open files for free.
"""
import platform

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 (the web server's header)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily)

from shared import RELEASE, codec
from host.server import TOKEN_CHECK_BUCKETS


def _counter(name, doc, value):
    return CounterMetricFamily(name, doc, value=value)


def _labelled(family, label, values):
    for key, value in values:
        family.add_metric([key], value)
    return family


class RealmCollector:
    """`view`: the status view, whose registry figures (the queue) are at most seconds old."""

    def __init__(self, realm, view):
        self.realm = realm
        self.view = view

    def collect(self):
        realm, s = self.realm, self.realm.stats
        yield InfoMetricFamily("realm_build", "the realm's version", value={
            "version": RELEASE, "python": platform.python_version()})
        yield GaugeMetricFamily("realm_start_time_seconds", "when this node started (Unix time)",
                                value=s.started)
        yield GaugeMetricFamily("realm_sessions", "devices logged in on this node",
                                value=len(realm.router))
        yield GaugeMetricFamily("realm_handshakes_in_progress",
                                "links not logged in yet", value=len(realm.handshaking))
        yield _counter("realm_connects", "links opened (TCP connections, serial sessions)",
                       s.connects)
        yield _labelled(CounterMetricFamily(
            "realm_logins", "successful logins by handshake path: pinned (the device had the "
            "realm's key) or first_contact (SendKey exchanged)", labels=["path"]),
            "path", sorted(s.logins.items()))
        yield _labelled(CounterMetricFamily(
            "realm_refusals", "links closed before their login completed, by error code",
            labels=["code"]), "code", sorted(s.refusals.items()))
        yield _labelled(CounterMetricFamily(
            "realm_relayed_packets", "ProxyPass packets by the Delivery status they got",
            labels=["status"]), "status",
            [(codec.status_name(i), n) for i, n in enumerate(s.relayed)])
        yield _counter("realm_queue_flushed_packets",
                       "stored packets handed to their target after its login", s.flushed)
        packets, size = self.view.queue
        yield GaugeMetricFamily("realm_queue_packets", "packets in the offline queue",
                                value=packets)
        yield GaugeMetricFamily("realm_queue_bytes", "bytes of packets in the offline queue",
                                value=size)
        yield _counter("realm_slow_reader_drops",
                       "links dropped for having too many unsent bytes", s.slow_readers)
        yield _counter("realm_session_replacements",
                       "sessions closed by a newer login of the same device", s.replaced)
        yield _counter("realm_device_reports", "DeviceReports received", s.reports)
        yield _counter("realm_serial_framer_drops",
                       "serial frames dropped (bad checksum, too long)",
                       s.serial_drops + sum(port.link.framer.dropped
                                            for port in realm.serial_ports
                                            if port.link is not None))
        buckets, running = [], 0
        for bound, count in zip(TOKEN_CHECK_BUCKETS + (float("inf"),), s.token_check_buckets):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            "realm_token_check_seconds", "time to check a login's token (realm-made tokens: one "
            "SHA-256; chosen ones: scrypt, off the loop, cached after it passed)", buckets=buckets,
            sum_value=s.token_check_seconds)


class Metrics:
    """The /metrics body for one realm."""

    def __init__(self, realm, view):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RealmCollector(realm, view))
        ProcessCollector(registry=self.registry)

    def render(self):
        return generate_latest(self.registry)
