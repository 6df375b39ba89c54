"""A small, pure SIP message codec: build requests, frame and parse responses, compute digest answers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_MESSAGE_BYTES = 64 * 1024
"""A SIP message larger than this is refused (a probe reads no further)."""

_COMPACT = {
    "v": "via", "i": "call-id", "f": "from", "t": "to", "l": "content-length", "m": "contact",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
    "r": "refer-to", "u": "allow-events", "x": "session-expires", "a": "accept-contact",
}
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6]\d\d) ?([^\r\n]*)")
_REQUEST_RE = re.compile(r"([A-Za-z]+) (\S+) SIP/2\.0")
_TOKEN_RE = re.compile(r"[!%'*+\-.0-9A-Z^_`a-z~]+")
_HEADER_END = b"\r\n\r\n"


class SipParseError(ValueError):
    """The bytes are not a SIP message this codec accepts; the text says why."""


@dataclass(frozen=True, slots=True)
class SipMessage:
    """A parsed SIP message. Responses have `status`; requests have `method` (status 0)."""

    status: int
    reason: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def is_response(self) -> bool:
        return self.status != 0

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}".rstrip()

    def header(self, name: str) -> str | None:
        """The first value of a header (compact forms understood), or None."""
        key = name.lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self.headers if k == key]


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str


def _decode(data: bytes) -> str:
    # UTF-8 is SIP's charset; a peer sending anything else is still worth a readable error.
    return data.decode("utf-8", errors="replace")


def printable(text: str, limit: int = 120) -> str:
    """Text safe to put in a reason: control characters escaped, length bounded."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:limit])
    return out + ("…" if len(text) > limit else "")


def header_end(buffer: bytes) -> int:
    """Index just past the blank line ending the headers, or -1 when it has not arrived yet."""
    i = buffer.find(_HEADER_END)
    return -1 if i < 0 else i + 4


def stream_message_length(buffer: bytes) -> int | None:
    """Framing on a stream transport: the length of the first message in `buffer`, None while incomplete.

    Raises SipParseError when the message is too large or cannot be framed (no Content-Length)."""
    # Keep-alive CRLFs between messages (RFC 5626) are skipped by the caller via `lstrip`.
    end = header_end(buffer)
    if end < 0:
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise SipParseError(f"SIP message over {MAX_MESSAGE_BYTES // 1024} KiB (no end of headers)")
        return None
    if end > MAX_MESSAGE_BYTES:
        raise SipParseError(f"SIP message over {MAX_MESSAGE_BYTES // 1024} KiB")
    length: int | None = None
    for name, value in _header_lines(_decode(buffer[:end - 4])):
        if name == "content-length":
            length = _content_length(value)
    if length is None:
        raise SipParseError("no Content-Length on a stream transport")
    total = end + length
    if total > MAX_MESSAGE_BYTES:
        raise SipParseError(f"SIP message over {MAX_MESSAGE_BYTES // 1024} KiB (Content-Length {length})")
    return total if len(buffer) >= total else None


def _content_length(value: str) -> int:
    v = value.strip()
    if not v.isascii() or not v.isdigit() or len(v) > 9:
        raise SipParseError(f"bad Content-Length {printable(v, 20)!r}")
    return int(v)


def _header_lines(head: str) -> list[tuple[str, str]]:
    """Header lines after the start line: unfolded, names lower-cased and compact forms expanded."""
    lines = head.split("\r\n")[1:]
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise SipParseError("continuation line before any header")
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad header line {printable(line, 60)!r}")
        key = name.lower()
        out.append((_COMPACT.get(key, key), value.strip()))
    return out


def parse_message(data: bytes) -> SipMessage:
    """Parse one whole SIP message (a datagram, or one framed by `stream_message_length`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"SIP message over {MAX_MESSAGE_BYTES // 1024} KiB")
    end = header_end(data)
    if end < 0:
        raise SipParseError("no end of headers (blank line)")
    head = _decode(data[:end - 4])
    start = head.split("\r\n", 1)[0]
    status, reason, method = 0, "", ""
    if m := _STATUS_RE.fullmatch(start):
        status, reason = int(m.group(1)), m.group(2).strip()
    elif m := _REQUEST_RE.fullmatch(start):
        method = m.group(1).upper()
    else:
        raise SipParseError(f"bad start line {printable(start, 60)!r}")
    headers = tuple(_header_lines(head))
    body = data[end:]
    lengths = [v for k, v in headers if k == "content-length"]
    if lengths:
        length = _content_length(lengths[0])
        if length > len(body):
            raise SipParseError(f"Content-Length {length} but {len(body)} body bytes")
        body = body[:length]
    msg = SipMessage(status, reason, method, headers, body)
    for required in ("via", "call-id", "cseq", "from", "to"):
        if msg.header(required) is None:
            raise SipParseError(f"no {required.title()} header")
    parse_cseq(msg.header("cseq") or "")
    return msg


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 10:
        raise SipParseError(f"bad CSeq {printable(value, 40)!r}")
    return CSeq(int(parts[0]), parts[1].upper())


def header_params(value: str) -> dict[str, str]:
    """The `;name=value` parameters of a header value such as Via (names lower-cased; flags map to '')."""
    params: dict[str, str] = {}
    for part in value.split(";")[1:]:
        name, _, val = part.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return params


def top_via_branch(msg: SipMessage) -> str | None:
    """The branch of the topmost Via (a Via header may carry several comma-separated values)."""
    via = msg.header("via")
    if via is None:
        return None
    return header_params(via.split(",", 1)[0]).get("branch")


def format_host(host: str) -> str:
    """An IPv6 literal in brackets, anything else as is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class Request:
    """A SIP request the probe sends; `encode` gives the wire form."""

    method: str
    uri: str
    transport: str  # UDP, TCP or TLS as written in Via
    local_host: str
    local_port: int
    branch: str
    from_uri: str
    from_tag: str
    to_uri: str
    call_id: str
    cseq: int
    contact_uri: str
    user_agent: str
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [
            f"{self.method} {self.uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {format_host(self.local_host)}:{self.local_port}"
            f";branch={self.branch};rport",
            "Max-Forwards: 70",
            f"From: <{self.from_uri}>;tag={self.from_tag}",
            f"To: <{self.to_uri}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {self.method}",
            f"Contact: <{self.contact_uri}>",
            f"User-Agent: {self.user_agent}",
            *(f"{name}: {value}" for name, value in self.extra),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def matches(msg: SipMessage, request: Request) -> bool:
    """Whether a response answers this request (RFC 3261 17.1.3: branch and CSeq method; plus Call-ID)."""
    if not msg.is_response or top_via_branch(msg) != request.branch:
        return False
    if (msg.header("call-id") or "").strip() != request.call_id:
        return False
    try:
        cseq = parse_cseq(msg.header("cseq") or "")
    except SipParseError:
        return False
    return cseq.number == request.cseq and cseq.method == request.method


# --- Digest authentication (RFC 2617, RFC 7616, RFC 8760) ---

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
}
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")  # strongest first (RFC 7616 3.7)
_CHALLENGE_PARAM_RE = re.compile(r'\s*([!#-\'*+\-.0-9A-Z^_`a-z|~]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge from WWW-Authenticate / Proxy-Authenticate."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None

    @property
    def supported(self) -> bool:
        return self.algorithm.upper().removesuffix("-SESS") in _HASHES


def parse_challenge(value: str) -> Challenge:
    """Parse one `Digest realm="..", nonce="..", ...` challenge value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"not a Digest challenge: {printable(value, 40)!r}")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _CHALLENGE_PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            raise SipParseError(f"bad Digest challenge {printable(value, 60)!r}")
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
        pos = m.end()
    if "realm" not in params or "nonce" not in params:
        raise SipParseError("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(params["realm"], params["nonce"], params.get("algorithm", "MD5") or "MD5", qop,
                     params.get("opaque"))


def pick_challenge(values: Sequence[str]) -> Challenge | None:
    """The strongest supported Digest challenge among several header values, or None."""
    found: list[Challenge] = []
    for value in values:
        try:
            found.append(parse_challenge(value))
        except SipParseError:
            continue
    usable = [c for c in found if c.supported]
    if not usable:
        return None

    def rank(c: Challenge) -> int:
        return _PREFERENCE.index(c.algorithm.upper().removesuffix("-SESS"))

    return min(usable, key=rank)


def digest_response(challenge: Challenge, *, username: str, password: str, method: str, uri: str,
                    cnonce: str, nc: int = 1, body: bytes = b"") -> tuple[str, str | None]:
    """(response hash, qop used) for a challenge; pure, so it is checked against the RFC examples."""
    algorithm = challenge.algorithm.upper()
    base = algorithm.removesuffix("-SESS")
    if base not in _HASHES:
        raise SipParseError(f"unsupported digest algorithm {printable(challenge.algorithm, 20)!r}")
    h = _HASHES[base]

    def hs(*parts: str) -> str:
        return h(":".join(parts).encode())

    ha1 = hs(username, challenge.realm, password)
    if algorithm.endswith("-SESS"):
        ha1 = hs(ha1, challenge.nonce, cnonce)
    qop: str | None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    elif challenge.qop:
        raise SipParseError(f"unsupported qop {','.join(challenge.qop)!r}")
    else:
        qop = None
    ha2 = hs(method, uri, h(body)) if qop == "auth-int" else hs(method, uri)
    if qop is None:
        return hs(ha1, challenge.nonce, ha2), None
    return hs(ha1, challenge.nonce, f"{nc:08x}", cnonce, qop, ha2), qop


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, *, username: str, password: str, method: str, uri: str,
                  cnonce: str, nc: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge`."""
    response, qop = digest_response(challenge, username=username, password=password, method=method,
                                    uri=uri, cnonce=cnonce, nc=nc)
    parts = [f"username={_quote(username)}", f"realm={_quote(challenge.realm)}",
             f"nonce={_quote(challenge.nonce)}", f"uri={_quote(uri)}", f"response={_quote(response)}",
             f"algorithm={challenge.algorithm}"]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
