"""How log lines are written: plain text (the default) or JSON lines (LOG_FORMAT=json), each with the
request id, and with secrets blotted out whatever the format: tokens, passwords, download tickets,
signed link paths and presigned URL signatures never reach a log."""

import json
import logging
import re
import traceback
from datetime import UTC, datetime

from hub.request_ids import current

SECRETS = [
    (re.compile(r"\bwg_[A-Za-z0-9_-]+"), "wg_[redacted]"),  # API tokens
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+"), r"\1 [redacted]"),
    (re.compile(r"(/files/)[^/\s\"']+"), r"\1[redacted]"),  # download tickets
    (re.compile(r"(/dl/)[^/\s\"']+"), r"\1[redacted]"),  # signed download links
    (
        re.compile(r"(?i)\b(password\d?|secret|token|x-amz-signature|x-amz-credential|signature)=[^&\s\"']+"),
        r"\1=[redacted]",
    ),
    (re.compile(r"(?i)(['\"](?:password\d?|token|secret)['\"]\s*:\s*['\"])[^'\"]*"), r"\1[redacted]"),
]


def redacted(text: str) -> str:
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record, for either format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get() or "-"
        return True


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redacted(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            line["exception"] = redacted("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(line, default=str)
