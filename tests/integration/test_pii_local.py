"""Sensitive data stays local, end to end: API -> worker -> two fake deployments (the cloud alias
``general`` on claude-fake, the local alias ``sensitive`` on llama-fake), with the PII rule and body
logging on. The fake's recorded bodies and the audit lines are searched for every value."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from gateway import policies
from gateway.pii import Detector, Finding
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import SERVICE, StartStack, audit_events, submit

LOCAL, CLOUD = "llama-fake", "claude-fake"
PII_RULE: dict[str, Any] = {"name": "stay_local", "rule": "if_context_contains_pii_use_sensitive_model"}
AUDIT: dict[str, Any] = {"name": "audit_everything", "rule": "log_all_requests_and_responses"}

#: (prompt, the value in it), in English, German, French, Spanish, Portuguese, Italian, Dutch, Polish
PAYLOADS: list[tuple[str, str]] = [
    ("Please write to maria.garcia@correo.es about her refund", "maria.garcia@correo.es"),
    ("Bitte rufen Sie Herrn Becker an: Telefon +49 30 901820", "+49 30 901820"),
    ("Merci d'envoyer la facture à jean.dupont@exemple.fr", "jean.dupont@exemple.fr"),
    ("Overboeken naar IBAN NL91 ABNA 0417 1643 00 graag", "NL91 ABNA 0417 1643 00"),
    ("Zahlung an DE89 3704 0044 0532 0130 00 veranlassen", "DE89 3704 0044 0532 0130 00"),
    ("Carta di credito 4111 1111 1111 1111, scadenza 12/29", "4111 1111 1111 1111"),
    ("Cliente: SSN 078-05-1120, verify identity", "078-05-1120"),
    ("Il server del cliente è 203.0.113.42, controlla i log", "203.0.113.42"),
    ("Cartão 5555 5555 5555 4444 recusado ontem", "5555 5555 5555 4444"),
    ("Proszę o kontakt: anna.kowalska@poczta.pl", "anna.kowalska@poczta.pl"),
    ("Date of birth: 14/03/1985, please update the record", "14/03/1985"),
    ("Geburtsdatum: 02.11.1979 laut Ausweis", "02.11.1979"),
    ("Call me on +44 20 7946 0958 tomorrow", "+44 20 7946 0958"),
    ("FR14 2004 1010 0505 0001 3M02 606 est le compte du client", "FR14 2004 1010 0505 0001 3M02 606"),
    ("ES91 2100 0418 4502 0005 1332 para la transferencia", "ES91 2100 0418 4502 0005 1332"),
    ("Telefone do cliente: +351 912 345 678", "+351 912 345 678"),
    ("Envía el contrato a lucia.fernandez@empresa.com.mx hoy", "lucia.fernandez@empresa.com.mx"),
    ("Der Kunde meldet sich von 198.51.100.7 aus an", "198.51.100.7"),
    ("Numer telefonu: +48 512 345 678, dzwonić po 17", "+48 512 345 678"),
    ("Tel. +39 06 6982 1234 (ufficio di Roma)", "+39 06 6982 1234"),
]
#: one CSV row holding several values: every one must be masked in the audit, not only the first
CSV_ROW = (
    "id;name;email;iban;phone\n7;Jan de Vries;jan.devries@voorbeeld.nl;NL91 ABNA 0417 1643 00;+31 20 555 0199"
)
CSV_VALUES = ["jan.devries@voorbeeld.nl", "NL91 ABNA 0417 1643 00", "+31 20 555 0199"]


def cloud_bodies(fake: FakeProvider) -> str:
    return json.dumps([r.body for r in fake.requests if r.model != LOCAL], ensure_ascii=False)


def audit_text(connection: redis.Redis) -> str:
    return json.dumps(audit_events(connection), ensure_ascii=False)


def test_no_detected_value_reaches_the_cloud_model_or_the_audit_log(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    api = stack(policies=[PII_RULE, AUDIT]).api
    clean = submit(api, {"model": "general", "prompt": "Summarise the quarterly plan"}).json()
    assert clean["status"] == "succeeded" and clean["result"]["model"] == "general"
    jobs = [submit(api, {"model": "general", "prompt": p}).json() for p, _ in PAYLOADS + [(CSV_ROW, "")]]
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert job["result"]["model"] == "sensitive" and job["result"]["provider"] == "ollama"
    local = json.dumps(fake.bodies_for(LOCAL), ensure_ascii=False)
    cloud, audit = cloud_bodies(fake), audit_text(redis_client)
    values = [v for _, v in PAYLOADS] + CSV_VALUES
    assert all(v in local for v in values)  # the local model got the text as it was
    assert fake.count(CLOUD) == 1  # the clean job only
    assert [v for v in values if v in cloud] == []
    assert [v for v in values if v in audit] == []
    events = {e["job_id"]: e for e in audit_events(redis_client)}
    assert all(events[job["id"]]["request"]["messages"] for job in jobs)  # bodies were logged, masked


def test_an_always_local_service_and_a_metadata_tag_stay_local_with_no_pii(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis
) -> None:
    tagged = {**PII_RULE, "local_metadata": {"data_class": "restricted"}}
    api = stack(policies=[tagged, AUDIT]).api
    job = submit(api, {"model": "general", "prompt": "Plan", "metadata": {"data_class": "restricted"}}).json()
    assert job["status"] == "succeeded" and job["result"]["model"] == "sensitive", job
    routed = next(d for d in job["result"]["policy"] if d["policy"] == "stay_local")
    assert routed["reason"].startswith("always local: metadata data_class=restricted")
    assert fake.count(CLOUD) == 0


def test_a_service_declared_always_local_never_reaches_the_cloud(
    stack: StartStack, fake: FakeProvider
) -> None:
    api = stack(policies=[PII_RULE], services={SERVICE: {"always_local": True}}).api
    job = submit(api, {"model": "general", "prompt": "Summarise the quarterly plan"}).json()
    assert job["status"] == "succeeded" and job["result"]["model"] == "sensitive", job
    routed = next(d for d in job["result"]["policy"] if d["policy"] == "stay_local")
    assert routed["reason"] == f"always local: service {SERVICE}; routed from general to sensitive"
    assert fake.count(CLOUD) == 0 and fake.count(LOCAL) == 1


class Broken:
    """A detector whose engine fails on every text (as a crashed model server or a bad install would)."""

    name = "broken"

    def find(self, text: str) -> list[Finding]:
        raise RuntimeError("detector engine unavailable")


def broken(_engine: str, _categories: Iterable[str] | None, **_settings: object) -> Detector:
    return Broken()


def test_a_detector_that_fails_keeps_the_job_local_and_a_local_failure_says_why(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policies, "make_detector", broken)  # the policies' detectors, not the audit's
    api = stack(policies=[PII_RULE, AUDIT], jobs={"max_attempts": 1}).api
    email = "maria.garcia@correo.es"
    job = submit(api, {"model": "general", "prompt": f"Write to {email}"}).json()
    assert job["status"] == "succeeded" and job["result"]["model"] == "sensitive", job
    routed = next(d for d in job["result"]["policy"] if d["policy"] == "stay_local")
    assert routed["reason"].startswith("PII detection failed (RuntimeError); kept local")
    fake.script(Fault.status(503), model=LOCAL)
    failed = submit(api, {"model": "general", "prompt": f"Write to {email} again"}).json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["message"].startswith(
        "kept on the local model `sensitive` because PII detection failed; it is never sent to a cloud model"
    )
    assert fake.count(CLOUD) == 0
    assert email not in json.dumps(failed) and email not in audit_text(redis_client)
