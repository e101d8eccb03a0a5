"""Request limits: body size and request rates, as one ASGI middleware in front of the app.

**Body size.** A request body over ``max_body_bytes`` (1 MiB) is answered 413 before the app sees
it: a ``Content-Length`` above the limit at once, a streamed (chunked) body as soon as the bytes
received pass the limit, so no more than the limit plus one chunk is ever held in memory.

**Rates.** The expensive routes (exports, reports, person search and the audit search) and every
write (POST, PATCH, PUT, DELETE) are limited per client address and per token subject (user and
organisation of a token whose signature verified: an unverified ``sub`` could be forged to use up
someone else's allowance). Each key has a token bucket of ``limit`` requests that refills evenly
over the window, so the request after ``limit`` quick ones waits ``window / limit`` seconds, and
after a full window of quiet the whole allowance is back. A refused request is answered 429 with
``Retry-After`` and costs nothing. The buckets live in this process's memory (with N workers each
has its own, so the effective limit is N times the figure); every limiter keeps at most
``max_keys`` keys and forgets the least recently used first, so memory stays bounded whatever
addresses and tokens arrive. Time is the monotonic clock, not the app's (movable) clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from casemgmt.auth.tokens import verify_once
from casemgmt.problems import PayloadTooLarge, RateLimited, problem_response

MiB = 1024 * 1024
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``window`` seconds; ``limit`` 0 switches the limit off."""

    limit: int
    window: float


class TokenBuckets:
    """Token buckets per key; O(1) per check, at most ``max_keys`` keys (least recently used go)."""

    def __init__(self, rate: Rate, clock: Callable[[], float], max_keys: int = 10_000):
        self.rate = rate
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def available(self, key: str, now: float) -> float:
        """Tokens the key has at ``now``."""
        tokens, at = self._buckets.get(key, (float(self.rate.limit), now))
        refill = (now - at) * self.rate.limit / self.rate.window
        return min(float(self.rate.limit), tokens + max(refill, 0.0))

    def wait(self, key: str, now: float) -> float:
        """Seconds until the key may make one more request (0 if it may now)."""
        if self.rate.limit <= 0:
            return 0.0
        tokens = self.available(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) * self.rate.window / self.rate.limit

    def take(self, key: str, now: float) -> None:
        if self.rate.limit <= 0:
            return
        self._buckets[key] = (self.available(key, now) - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimiter:
    """Buckets per route class (``expensive``, ``write``) and per kind of key (address, subject)."""

    def __init__(self, rates: dict[tuple[str, str], Rate], clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets = {name: TokenBuckets(rate, clock, max_keys) for name, rate in rates.items()}

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        window = float(settings.rate_limit_window_seconds)
        return cls({
            ("expensive", "subject"): Rate(settings.rate_limit_expensive_per_subject, window),
            ("expensive", "address"): Rate(settings.rate_limit_expensive_per_address, window),
            ("write", "subject"): Rate(settings.rate_limit_writes_per_subject, window),
            ("write", "address"): Rate(settings.rate_limit_writes_per_address, window),
        }, clock)

    def hit(self, route_class: str, keys: dict[str, str]) -> float:
        """Count one request of ``route_class`` for each ``kind -> key``; returns 0 if it may go
        ahead, else the seconds to wait (and then nothing is counted)."""
        with self._lock:
            now = self.clock()
            buckets = [(self._buckets.get((route_class, kind)), key) for kind, key in keys.items()]
            buckets = [(b, key) for b, key in buckets if b is not None]
            wait = max((b.wait(key, now) for b, key in buckets), default=0.0)
            if wait > 0:
                return wait
            for b, key in buckets:
                b.take(key, now)
            return 0.0

    def keys_held(self) -> int:
        return sum(len(b) for b in self._buckets.values())


def route_class(method: str, path: str) -> str | None:
    """Which limit applies: ``expensive`` (exports, reports, searches), ``write``, or none."""
    if path.startswith(("/exports/", "/reports/", "/public/", "/ui/angebote")):
        return "expensive"
    if (method == "POST" and path == "/persons/search") or (method in ("GET", "HEAD") and path == "/audit"):
        return "expensive"
    if method in WRITE_METHODS:
        return "write"
    return None


def _header(scope: dict[str, Any], name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k.lower() == name]


class RequestLimits:
    """The ASGI middleware. The limiter is read from ``app.state.rate_limiter`` on every request,
    so a test can put in one with its own clock."""

    def __init__(self, app: Any, max_body_bytes: int = MiB):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._within_rate(scope, receive, send):
            return
        lengths = _header(scope, b"content-length")
        if lengths:
            declared = lengths[0].strip()
            if len(lengths) > 1 or not declared.isdigit():
                response = problem_response(400, "http-error", "HTTP error",
                                            "the Content-Length header is not one number", scope["path"])
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; there is nobody to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _within_rate(self, scope: dict[str, Any], receive: Callable, send: Callable) -> bool:
        kind = route_class(scope["method"], scope["path"])
        state = getattr(scope.get("app"), "state", None)
        limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
        if kind is None or limiter is None:
            return True
        client = scope.get("client")
        keys = {"address": client[0] if client else "-"}
        subject = _verified_subject(scope, getattr(state, "verifier", None))
        if subject is not None:
            keys["subject"] = subject
        wait = limiter.hit(kind, keys)
        if wait <= 0:
            return True
        retry_after = max(1, math.ceil(wait))
        response = problem_response(
            429, RateLimited.slug, "Too many requests",
            f"too many {'requests of this kind' if kind == 'expensive' else 'changes'} in a short "
            f"time; try again in {retry_after} s", scope["path"], retry_after=retry_after)
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)
        return False

    async def _too_large(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        response = problem_response(
            413, PayloadTooLarge.slug, "Request body too large",
            f"the request body is larger than {self.max_body_bytes} bytes", scope["path"],
            max_bytes=self.max_body_bytes)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _verified_subject(scope: dict[str, Any], verifier: Any) -> str | None:
    """``org/user`` of a bearer token whose signature and claims verify; ``None`` otherwise."""
    if verifier is None:
        return None
    auth = _header(scope, b"authorization")
    if len(auth) != 1:
        return None
    scheme, _, token = auth[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = verify_once(scope, verifier, token.strip())
    except Exception:  # any refusal: the route answers 401 itself; only the address counts
        return None
    return f"{claims.organisation_key}\x00{claims.user_id}"


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
