"""`slawatch check-config` checks every notification recipient with the channels that would send to it, located,
and shows no secret of a URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from slawatch.config.loader import load

ROOT = Path(__file__).resolve().parents[2]


def check(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "slawatch.yaml"
    path.write_text(f"contract: {ROOT / 'config' / 'contract.yaml'}\n{body}", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "slawatch.cli", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


COMPONENTS = 'components: [{name: c1, class: sip, customer: acme, probes: [{kind: tcp, target: "127.0.0.1:1"}]}]\n'


def test_unusable_recipients_are_located_errors_without_their_secrets(tmp_path: Path) -> None:
    proc = check(tmp_path, 'customers: [{name: acme, tier: gold, notify: ["foo://bar/baz", "ops@acme.example"]}]\n'
                           'notify: {noc: ["json://user:s3cretpw@127.0.0.1:9/x", "tgram://x"]}\n' + COMPONENTS)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert any("customers[0].notify[0] (foo://bar/baz): unknown notification scheme foo://" in x for x in lines)
    assert any("customers[0].notify[1] (ops@acme.example): no SMTP settings" in x for x in lines)
    assert any(x.split(": ", 1)[1].startswith("notify.noc[1]") for x in lines)
    assert not any("notify.noc[0]" in x for x in lines)  # a well-formed json:// URL is fine
    assert lines[-1].endswith("3 errors") and "s3cretpw" not in proc.stdout + proc.stderr


def test_a_recipient_that_is_neither_address_nor_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    proc = check(tmp_path, 'customers: [{name: acme, tier: gold}]\n'
                           'notify: {noc: ["json://user:s3cret pw@127.0.0.1/x"]}\n' + COMPONENTS)
    assert proc.returncode == 2
    assert "notify.noc[0]: not a notification recipient (json://…): write an email address" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr


def test_usable_recipients_pass_and_the_summary_says_who_is_told(tmp_path: Path) -> None:
    proc = check(tmp_path, "report: {smtp: {host: 127.0.0.1, port: 2525}}\n"
                           'customers: [{name: acme, tier: gold, notify: ["ops@acme.example"]}]\n'
                           'notify: {noc: ["noc@provider.example", "json://127.0.0.1:9/x"]}\n' + COMPONENTS)
    assert proc.returncode == 0, proc.stderr
    assert "incidents: raised and notified to 2 NOC recipient(s), 1 customer contact(s)" in proc.stdout


def test_the_records_store_is_found_beside_the_config_wherever_commands_run(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for storage, expected in (("storage: {records: incidents.db, sqlite: {path: s.db}}", "incidents.db"),
                              ("storage: {sqlite: {path: s.db}}", "s.db"),
                              ("storage: {influxdb: {url: 'http://127.0.0.1:1', database: x}}", "slawatch.db")):
        path = tmp_path / "etc" / "slawatch.yaml"
        path.write_text(f"contract: {ROOT / 'config' / 'contract.yaml'}\n{storage}\n", encoding="utf-8")
        assert load(path).config.storage.records_path == tmp_path / "etc" / expected, storage
