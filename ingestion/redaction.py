"""Secrets out of text that rainlog keeps or shows: the one redaction function.

Gateways echo the credentials they were sent in their error texts, and not always as sent: HTML-
escaped, URL-encoded, upper-cased, inside JSON escapes, or as the base64 of `id:password` of a
Basic header. `redact` finds a secret in any of these forms (also mixed within one occurrence)
and replaces it. Incidents (message, raw reply), incident reports, logs, operators' messages and
live-fetch answers all go through it.
"""

from __future__ import annotations

import base64
import binascii
import html.entities
import re
from collections.abc import Iterable
from functools import lru_cache

REDACTED = "[redacted]"
# Secrets shorter than this are not searched for: they would match ordinary words and numbers.
MIN_REDACTED_LENGTH = 4
# Runs of base64 long enough to hold a secret of MIN_REDACTED_LENGTH characters.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of each secret (of MIN_REDACTED_LENGTH or more) replaced."""
    for secret in secrets:
        if secret and len(secret) >= MIN_REDACTED_LENGTH and text:
            text = _redact_one(text, _secret_pattern(secret))
    return text


def _redact_one(text: str, pattern: re.Pattern[str]) -> str:
    def base64_run(run: re.Match[str]) -> str:
        return REDACTED if _decodes_to_secret(run.group(), pattern) else run.group()

    return pattern.sub(REDACTED, _BASE64_RUN.sub(base64_run, text))


@lru_cache(maxsize=256)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    return re.compile("".join(_character_forms(ch) for ch in secret), re.IGNORECASE)


def _character_forms(ch: str) -> str:
    """A regular expression for one character of a secret, as any encoding may have written it."""
    code = ord(ch)
    forms = [
        re.escape(ch),
        f"&#0*{code};?",
        f"&#x0*{code:x};?",
        # URL encoding, of the character's UTF-8 bytes.
        "".join(f"%{byte:02x}" for byte in ch.encode()),
        rf"\\u{code:04x}" if code <= 0xFFFF else re.escape(ch),
    ]
    name = html.entities.codepoint2name.get(code)
    if name:
        forms.append(f"&{name};")
    if ch == "'":
        forms.append("&apos;")
    if ch == " ":
        forms.append(r"\+")
    if ch in '"/\\':
        forms.append(re.escape("\\" + ch))
    return "(?:" + "|".join(forms) + ")"


def _decodes_to_secret(run: str, pattern: re.Pattern[str]) -> bool:
    """Whether a run of base64 (standard or URL-safe, at any alignment) decodes to text holding
    the secret: a Basic header's `id:password`, wherever the gateway put it."""
    for offset in range(4):
        chunk = run[offset:].rstrip("=")
        chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) % 4 == 1 else chunk
        padded = chunk + "=" * (-len(chunk) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = decode(padded)
            except (binascii.Error, ValueError):
                continue
            if pattern.search(decoded.decode("utf-8", errors="replace")):
                return True
    return False
