"""How the chaos tool and the load workers present themselves to a system: what the state file says of its
security, and the tokens each kind of call carries (checked here by the gateway's own verifier)."""

from __future__ import annotations

from pathlib import Path

from pullgate.security.access import Access
from pullgate.security.tokens import Caller, TokenSettings, TokenVerifier
from pullgate.tools.chaos.load import Load
from pullgate.tools.chaos.owners import CUSTOMER_IDS
from pullgate.tools.chaos.record import Record
from pullgate.tools.chaos.system import parse_state
from pullgate.tools.gateway_channel import Metadata
from pullgate.tools.openloop import Gateway, Job, Phase

SERVICES = {"customers": [{"name": "customers", "address": "127.0.0.1:1", "pid": 6, "restarts": 0}]}


def _caller(access: Access, metadata: Metadata) -> Caller:
    """Who the gateway of the system `access` reaches takes a call with `metadata` for."""
    assert access.token_file is not None
    return TokenVerifier.from_settings(TokenSettings(secret_file=access.token_file)).from_metadata(metadata)


def test_the_state_file_says_how_to_reach_the_system() -> None:
    """A secure system's `security` record gives the tools its development PKI; an insecure one, or a state file
    written before there was a record, gives plaintext."""
    base = {"launcher_pid": 5, "data_dir": "/tmp/x", "services": SERVICES}
    secure = parse_state({**base, "security": {"mode": "mtls", "pki": "/tmp/x/pki", "policy": "/p.toml"}})
    assert secure.access == Access(Path("/tmp/x/pki")) and secure.access.secure
    assert not parse_state({**base, "security": {"mode": "insecure"}}).access.secure
    assert not parse_state(base).access.secure


def test_the_load_reads_as_an_admin_and_places_as_each_customer(tmp_path: Path) -> None:
    """Reads carry a token that may see every customer and acts for none; a placement one that acts for the
    customer it places for, and for no other, minted once per customer."""
    access = Access(tmp_path / "pki")
    load = Load("127.0.0.1:1", 1.0, Record(), 7, access=access)
    reader = _caller(access, load._reads)
    assert all(reader.may_see_customer(c) and not reader.acts_for(c) for c in CUSTOMER_IDS)
    first, other = CUSTOMER_IDS[:2]
    placer = _caller(access, load._placing(first))
    assert placer.acts_for(first) and not placer.acts_for(other) and not placer.may_see_customer(other)
    assert load._placing(first) is load._placing(first)


def test_an_insecure_system_gets_no_tokens(tmp_path: Path) -> None:
    """Against plaintext the load sends no authorization metadata, and the workers' gateway carries none."""
    load = Load("127.0.0.1:1", 1.0, Record(), 7, access=Access())
    assert load._reads == () and load._placing(CUSTOMER_IDS[0]) == ()
    gateway = Gateway.of("127.0.0.1:1", Access())
    assert gateway == Gateway("127.0.0.1:1") and gateway.metadata == ()


def test_a_worker_job_carries_how_to_reach_each_gateway(tmp_path: Path) -> None:
    """A job's gateways survive the trip to a worker process: the address, the PKI and a token that may read
    every customer's orders."""
    access = Access(tmp_path / "pki")
    gateway = Gateway.of("127.0.0.1:1", access)
    assert gateway.access == access
    job = Job((gateway, Gateway("127.0.0.1:2")), "strong", 1.0, 0.0, (Phase("spike", 2.0, 10.0),), worker=1,
              workers=2)
    assert Job.from_json(job.to_json()) == job
    caller = _caller(access, gateway.metadata)
    assert all(caller.may_see_customer(c) for c in CUSTOMER_IDS)
