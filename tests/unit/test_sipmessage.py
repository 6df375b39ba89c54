"""The SIP message codec: parsing, framing, request building, digest answers (RFC vectors) and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.sipmessage import (
    MAX_MESSAGE_BYTES,
    Challenge,
    Request,
    SipParseError,
    authorization,
    digest_response,
    header_params,
    matches,
    parse_challenge,
    parse_cseq,
    parse_message,
    pick_challenge,
    stream_message_length,
    top_via_branch,
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5070;received=127.0.0.1, SIP/2.0/UDP 10.0.0.1\r\n"
    b"f: <sip:slawatch@127.0.0.1>;tag=abc\r\n"
    b"t: <sip:127.0.0.1>;tag=xyz\r\n"
    b"i: call-1@slawatch\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Server: folded\r\n  over two lines\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"bodyEXTRA"
)


def request(**kw: object) -> Request:
    base: dict[str, object] = dict(
        method="OPTIONS", uri="sip:127.0.0.1", transport="UDP", local_host="127.0.0.1", local_port=5070,
        branch="z9hG4bK-1", from_uri="sip:slawatch@127.0.0.1", from_tag="abc", to_uri="sip:127.0.0.1",
        call_id="call-1@slawatch", cseq=1, contact_uri="sip:slawatch@127.0.0.1:5070", user_agent="slawatch/0.1.0")
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


def test_parse_response_compact_forms_folding_and_body() -> None:
    msg = parse_message(OK)
    assert (msg.status, msg.reason, msg.status_line) == (200, "OK", "200 OK")
    assert msg.header("Call-ID") == "call-1@slawatch"
    assert msg.header("from") == "<sip:slawatch@127.0.0.1>;tag=abc"
    assert msg.header("server") == "folded over two lines"
    assert msg.body == b"body"
    assert top_via_branch(msg) == "z9hG4bK-1"
    assert parse_cseq(msg.header("cseq") or "").method == "OPTIONS"


@pytest.mark.parametrize(("data", "why"), [
    (b"", "no end of headers"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "bad start line"),
    (b"SIP/2.0 2OO OK\r\n\r\n", "bad start line"),
    (OK.replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"), "bad CSeq"),
    (OK.replace(b"i: call-1@slawatch\r\n", b""), "no Call-Id header"),
    (OK.replace(b"l: 4", b"l: 400"), "Content-Length 400 but"),
    (OK.replace(b"l: 4", b"l: -4"), "bad Content-Length"),
    (OK.replace(b"Server: folded", b"Server folded"), "bad header line"),
    (b"SIP/2.0 200 OK\r\n" + b"X: " + b"a" * MAX_MESSAGE_BYTES + b"\r\n\r\n", "over 64 KiB"),
])
def test_parse_rejects_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(SipParseError, match=why):
        parse_message(data)


def test_stream_framing() -> None:
    assert stream_message_length(OK[:50]) is None
    assert stream_message_length(OK[:OK.index(b"body") + 2]) is None  # body not complete yet
    assert stream_message_length(OK) == OK.index(b"body") + 4
    with pytest.raises(SipParseError, match="no Content-Length"):
        stream_message_length(OK.replace(b"l: 4\r\n", b""))
    with pytest.raises(SipParseError, match="over 64 KiB"):
        stream_message_length(b"A" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(SipParseError, match="over 64 KiB"):
        stream_message_length(OK.replace(b"l: 4", b"l: 10000000"))


def test_request_is_well_formed() -> None:
    wire = request(extra=(("Expires", "0"),)).encode()
    msg = parse_message(wire)
    assert msg.method == "OPTIONS" and not msg.is_response
    via = msg.header("via") or ""
    assert via.startswith("SIP/2.0/UDP 127.0.0.1:5070;")
    assert header_params(via) == {"branch": "z9hG4bK-1", "rport": ""}
    assert msg.header("from") == "<sip:slawatch@127.0.0.1>;tag=abc"
    for name, value in [("max-forwards", "70"), ("cseq", "1 OPTIONS"), ("call-id", "call-1@slawatch"),
                        ("contact", "<sip:slawatch@127.0.0.1:5070>"), ("user-agent", "slawatch/0.1.0"),
                        ("content-length", "0"), ("expires", "0"), ("to", "<sip:127.0.0.1>")]:
        assert msg.header(name) == value
    assert wire.endswith(b"\r\n\r\n")


def test_ipv6_via() -> None:
    assert b"Via: SIP/2.0/TCP [::1]:5070;" in request(local_host="::1", transport="TCP").encode()


@pytest.mark.parametrize(("change", "expected"), [
    ({}, True),
    ({"branch": "z9hG4bK-2"}, False),
    ({"call_id": "other"}, False),
    ({"cseq": 2}, False),
    ({"method": "REGISTER"}, False),
])
def test_matching(change: dict[str, object], expected: bool) -> None:
    assert matches(parse_message(OK), request(**change)) is expected


# RFC 2617 3.5 and RFC 7616 3.9.1 examples: (realm, nonce, algorithm, password, cnonce, expected response)
RFC_VECTORS = [
    ("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "MD5", "Circle Of Life", "0a4f113b",
     "6629fae49393a05397450978507c4ef1"),
    ("http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "MD5", "Circle of Life",
     "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "8ca523f5e9506fed4657c9700eebdbec"),
    ("http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "SHA-256", "Circle of Life",
     "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
     "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
]


@pytest.mark.parametrize(("realm", "nonce", "algorithm", "password", "cnonce", "expected"), RFC_VECTORS)
def test_digest_rfc_vectors(realm: str, nonce: str, algorithm: str, password: str, cnonce: str,
                            expected: str) -> None:
    challenge = Challenge(realm, nonce, algorithm, ("auth",))
    assert digest_response(challenge, username="Mufasa", password=password, method="GET",
                           uri="/dir/index.html", cnonce=cnonce) == (expected, "auth")


def test_digest_without_qop_is_rfc2069() -> None:
    # RFC 2069 form H(HA1:nonce:HA2): its example (password CircleOfLife) with the value from its erratum.
    challenge = Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093")
    response, qop = digest_response(challenge, username="Mufasa", password="CircleOfLife", method="GET",
                                    uri="/dir/index.html", cnonce="x")
    assert qop is None and response == "1949323746fe6a43ef61f9606e7febea"


def test_digest_unsupported() -> None:
    with pytest.raises(SipParseError, match="unsupported digest algorithm"):
        digest_response(Challenge("r", "n", "SHA-1"), username="u", password="p", method="M", uri="u", cnonce="c")
    with pytest.raises(SipParseError, match="unsupported qop"):
        digest_response(Challenge("r", "n", "MD5", ("x",)), username="u", password="p", method="M", uri="u",
                        cnonce="c")


def test_challenge_parsing_and_authorization() -> None:
    c = parse_challenge('Digest realm="a, \\"b\\"", nonce="n1", qop="auth,auth-int", algorithm=SHA-256, '
                        'opaque="op", stale=FALSE')
    assert c == Challenge('a, "b"', "n1", "SHA-256", ("auth", "auth-int"), "op")
    header = authorization(c, username="alice", password="pw", method="REGISTER", uri="sip:h", cnonce="cn")
    assert header.startswith('Digest username="alice", realm="a, \\"b\\"", nonce="n1", uri="sip:h", response="')
    assert 'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="cn", opaque="op"' in header
    with pytest.raises(SipParseError):
        parse_challenge('Basic realm="x"')
    with pytest.raises(SipParseError, match="without realm or nonce"):
        parse_challenge('Digest realm="x"')


def test_pick_strongest_supported_challenge() -> None:
    offered = ['Digest realm="r", nonce="1", algorithm=MD5', 'Digest realm="r", nonce="2", algorithm=SHA-256',
               'Digest realm="r", nonce="3", algorithm=AKAv1-MD5', "garbage"]
    assert (picked := pick_challenge(offered)) is not None and picked.nonce == "2"
    assert pick_challenge(['Digest realm="r", nonce="3", algorithm=AKAv1-MD5']) is None
    assert pick_challenge([]) is None


# --- fuzzing: only SipParseError, whatever the bytes ---

@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    for parse in (parse_message, stream_message_length):
        with contextlib.suppress(SipParseError):
            parse(data)


_LINES = st.sampled_from([
    b"SIP/2.0 200 OK", b"SIP/2.0 100 Trying", b"OPTIONS sip:x SIP/2.0", b"Via: SIP/2.0/UDP h;branch=z9hG4bK1",
    b"v: x", b"i: c", b"CSeq: 1 OPTIONS", b"CSeq: x", b"From: <sip:a>;tag=1", b"To: b", b"l: 0", b"l: 5",
    b"Content-Length: 99999999999", b" folded", b"\tfolded", b"X:", b":", b"", b"\xff\xfe", b"abc",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_LINES, max_size=12), st.sampled_from([b"\r\n", b"\n", b"\r"]), st.binary(max_size=16))
def test_fuzz_sip_like_messages(lines: list[bytes], sep: bytes, tail: bytes) -> None:
    data = sep.join(lines) + b"\r\n\r\n" + tail
    for parse in (parse_message, stream_message_length):
        with contextlib.suppress(SipParseError):
            parse(data)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_header_values(text: str) -> None:
    for parse in (parse_challenge, parse_cseq, lambda t: pick_challenge([t, "Digest " + t])):
        with contextlib.suppress(SipParseError):
            parse(text)
    header_params(text)
