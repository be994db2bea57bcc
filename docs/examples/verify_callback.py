"""Verifies waotp's X-Waotp-Signature on a callback or hook call (Python 3, standard library).

    X-Waotp-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

keyed with WAOTP_CALLBACK_SECRET. Check the raw body bytes, before parsing any JSON, and refuse
a timestamp more than five minutes from your clock: a recorded call cannot be replayed later.

As a module: verify(secret, header, body) raises SignatureError or returns None.
As a script (used by waotp's tests):
    WAOTP_CALLBACK_SECRET=... python3 verify_callback.py '<header>' < body
exits 0 when the call is genuine, 1 (with the reason on stderr) when it is not.
"""

import hashlib
import hmac
import os
import sys
import time

TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    pass


def verify(secret, header, body, now=None, tolerance=TOLERANCE_SECONDS):
    """secret: bytes or str; header: the X-Waotp-Signature value; body: the raw bytes."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not header:
        raise SignatureError("no signature")
    timestamp, macs = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not timestamp.isdigit() or not macs:
        raise SignatureError("malformed signature header")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError("timestamp too old (or too far in the future)")
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # hmac.compare_digest takes the same time wherever the strings differ.
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        raise SignatureError("signature does not match the body")


if __name__ == "__main__":
    try:
        verify(os.environ["WAOTP_CALLBACK_SECRET"], sys.argv[1], sys.stdin.buffer.read())
    except SignatureError as refused:
        print(f"refused: {refused}", file=sys.stderr)
        sys.exit(1)
