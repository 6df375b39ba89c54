"""SIPp (Debian's sip-tester) as a SIP peer on a loopback port: a scenario file, started and stopped by the test."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from slawatch.testing import free_port, need_binary

# Answers every OPTIONS with 200 (`sipp -sn uas` waits for an INVITE and answers no OPTIONS).
OPTIONS_200 = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="OPTIONS answered 200">
  <recv request="OPTIONS" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
</scenario>
"""


def listening(port: int, proto: str) -> bool:
    """Whether something listens on loopback `port` (`proto` udp or tcp), read from /proc, so no packet is spent."""
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and (proto == "udp" or fields[3] == "0A"):
                    return True
    return False


class Sipp:
    """SIPp running `scenario` on 127.0.0.1:`port` (UDP or TCP) in `directory`; `stop()`, then `start()` again on
    the same port. With `messages`, SIPp traces every message it sends and receives into that file."""

    def __init__(self, scenario: Path, directory: Path, *, transport: str = "udp", port: int | None = None,
                 messages: Path | None = None) -> None:
        self.binary = need_binary("sipp", "sip-tester")
        self.scenario = scenario
        self.directory = directory
        self.transport = transport
        self.port = port or free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.messages = messages
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> Sipp:
        cmd = [self.binary, "-sf", str(self.scenario), "-i", "127.0.0.1", "-p", str(self.port),
               "-t", "u1" if self.transport == "udp" else "t1", "-nostdin",
               "-cp", str(free_port(socket.SOCK_DGRAM)), "-mi", "127.0.0.1", "-mp", str(free_port(socket.SOCK_DGRAM))]
        if self.messages is not None:
            cmd += ["-trace_msg", "-message_file", str(self.messages)]
        proc = subprocess.Popen(cmd, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.proc = proc
        deadline = time.monotonic() + timeout_s
        while not listening(self.port, "udp" if self.transport == "udp" else "tcp"):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"sipp exited: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sipp did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def options_peer(directory: Path, *, transport: str = "udp") -> Sipp:
    """A SIPp answering OPTIONS with 200 (not started yet), its scenario written into `directory`."""
    scenario = directory / "options_200.xml"
    scenario.write_text(OPTIONS_200)
    return Sipp(scenario, directory, transport=transport)
