"""Logging for the realm: one line per event, to stderr or a rotated file, time-stamped.

A peer must not be able to forge lines nor fill the disk: every message has its control
characters escaped (no text can start a line of its own), text a peer supplied is quoted
and cut (`quote`), each link writes at most LINK_LINES lines (`LinkLog`; its last line
says how many more were suppressed), and a log file is rotated at FILE_BYTES, FILE_KEEP
old files kept.
"""
import logging
import logging.handlers
import sys
import time

LOGGER = "realm"
PEER_TEXT_MAX = 120              # characters of peer-supplied text kept in a line
LINK_LINES = 8                   # lines one link may write; more are only counted
FILE_BYTES = 10 * 1024 * 1024    # --log-file is rotated at this size,
FILE_KEEP = 5                    # with this many old files kept (60 MiB at most)

_CONTROL = {i: "\\x%02x" % i for i in list(range(32)) + list(range(127, 160))}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
_QUOTED = dict(_CONTROL)
_QUOTED.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def escape(text):
    """`text` with every character that could end or colour a line escaped."""
    return text.translate(_CONTROL)


def quote(text, limit=PEER_TEXT_MAX):
    """Text a peer supplied, as a log line may show it: quoted, escaped, cut to `limit`."""
    if len(text) <= limit:
        return '"%s"' % text.translate(_QUOTED)
    return '"%s"... (%d more characters)' % (text[:limit].translate(_QUOTED), len(text) - limit)


_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_LINE = "%s %s %s"  # _FORMAT by position: asctime, levelname, message


class _Formatter(logging.Formatter):
    """`%(asctime)s %(levelname)s %(message)s`, the message escaped, at a realm's pace: a
    reconnect writes two lines, and logging.Formatter's own took 8 us each (its time
    stamp alone, made afresh for every line, 2 us)."""

    def __init__(self):
        super().__init__(_FORMAT)
        self._second = None  # the whole second whose stamp is _stamp
        self._stamp = ""

    def formatTime(self, record, datefmt=None):
        return self._time(record.created, record.msecs)

    def _time(self, created, msecs):
        """logging's default stamp (local time, then milliseconds), its seconds part
        made once a second."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, time.localtime(second))
            self._second = second
        return self.default_msec_format % (self._stamp, msecs)

    def format(self, record):
        """logging.Formatter.format's line, with the message escaped; a line with no
        traceback is made here, without the generic steps (a third of its cost)."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        message = record.getMessage()
        record.message = message if message.isprintable() else escape(message)
        return _LINE % (self.formatTime(record), record.levelname, record.message)

    def line(self, levelno, message, created):
        """What format() makes of a record of this level, message (its arguments applied)
        and creation time (msecs as LogRecord computes them)."""
        if not message.isprintable():
            message = escape(message)
        return _LINE % (self._time(created, int((created - int(created)) * 1000)),
                        logging.getLevelName(levelno), message)


class _StreamLines(logging.StreamHandler):
    """logging's StreamHandler (stderr, or the stream `realm serve` was given), which a
    link's lines reach without a LogRecord (LinkLog): about a third of what a line cost
    through logging, and a session writes two."""

    def write_line(self, levelno, message, created):
        text = self.formatter.line(levelno, message, created) + self.terminator
        with self.lock:
            self.stream.write(text)
            self.stream.flush()


def _line_writer(logger, level):
    """The logger's one handler if it writes lines itself and would be all that sees a
    record of `level` (no filters, no other handler, nothing propagated); else None."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.propagate:
        return None
    handler = handlers[0]
    if type(handler) is not _StreamLines or handler.filters or level < handler.level:
        return None
    return handler


def setup(verbose=False, stream=None, log_file=None):
    """Log to `log_file` (rotated) if given, else to `stream` (stderr)."""
    if log_file:
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=FILE_BYTES,
                                                       backupCount=FILE_KEEP)
    else:
        handler = _StreamLines(stream or sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    return root


def gather_only_what_is_shown():
    """For the realm's process: what the format never shows is not gathered for each
    record (the logging HOWTO's "Optimization"); the caller's frame walk was a quarter of
    a line's cost, and a reconnect writes three lines. Process-wide, so not in setup():
    a test calling that would lose the file and line in pytest's own log reports."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def get(name=None):
    return logging.getLogger(LOGGER if name is None else LOGGER + "." + name)


class LinkLog:
    """The lines of one link: the first `limit` are written, the rest counted; `last`,
    the line that ends the link, is always written and says how many were suppressed."""

    __slots__ = ("logger", "limit", "written", "suppressed")  # one per link

    def __init__(self, logger, limit=LINK_LINES):
        self.logger = logger
        self.limit = limit
        self.written = 0
        self.suppressed = 0

    def line(self, level, message, *args, exc_info=False):
        if not self.logger.isEnabledFor(level):  # not shown (DEBUG): nor counted
            return
        if self.written < self.limit:
            self.written += 1
            self._write(level, message, args, exc_info)
        else:
            self.suppressed += 1

    def last(self, message, *args):
        if self.suppressed:
            message += " (%d more lines of this link suppressed)"
            args += (self.suppressed,)
        self._write(logging.INFO, message, args)

    def _write(self, level, message, args, exc_info=False):
        writer = None if exc_info else _line_writer(self.logger, level)
        if writer is not None:
            try:
                writer.write_line(level, message % args if args else message, time.time())
                return
            except Exception:  # a stream that fails: logging's way reports it (below)
                pass
        self.logger.log(level, message, *args, exc_info=exc_info)
