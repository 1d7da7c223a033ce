"""A consumer of the usage topic in another language than Tollgate's (docs/finance.md, 1.):
reads every record of TOPIC with confluent-kafka, checks its CloudEvents headers, validates its
value against the published JSON Schema, deduplicates on event_id, checks that a cost breakdown
sums to the cost, and prints the spend per ledger scope (all time) as JSON:

    python compat.py BOOTSTRAP TOPIC SCHEMA.json

{"records": n, "events": m, "duplicates": d, "invalid": [...], "scopes": {"team/x": nano_usd}}

Money stays integer nano-USD: Python's int is exact.
"""

import json
import sys
import uuid

import jsonschema
from confluent_kafka import Consumer, TopicPartition

CE_TYPE = "dev.tollgate.usage.v1"


def headers_of(msg):
    return {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}


def problems_of(msg, validator):
    """Why a record breaks the contract (an empty list when it keeps it), and its event."""
    try:
        event = json.loads(msg.value())
    except (TypeError, ValueError) as e:
        return [f"not JSON: {e}"], None
    problems = [f"schema: {e.message}" for e in validator.iter_errors(event)]
    h = headers_of(msg)
    if h.get("ce_specversion") != "1.0" or h.get("ce_type") != CE_TYPE:
        problems.append(f"CloudEvents headers: {h}")
    if h.get("ce_id") != event.get("event_id") or h.get("content-type") != "application/json":
        problems.append("ce_id is not the event_id, or the content type is not JSON")
    owner = f"team/{event['team_id']}" if event.get("team_id") else f"key/{event.get('key_id')}"
    if msg.key() != owner.encode():
        problems.append("the record key is not the budget owner")
    parts = event.get("cost_by_token_type") or []
    if parts and sum(p["cost_nano_usd"] for p in parts) != event.get("cost_nano_usd"):
        problems.append("cost_by_token_type does not sum to cost_nano_usd")
    return problems, event


def read_all(bootstrap, topic):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"finance-compat-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    while ends:
        msg = consumer.poll(10)
        if msg is None:
            raise SystemExit(f"no record within 10 s; partitions left: {ends}")
        if msg.error():
            raise SystemExit(f"consumer error: {msg.error()}")
        yield msg
        if msg.offset() + 1 >= ends.get(msg.partition(), 0):
            ends.pop(msg.partition(), None)
    consumer.close()


def main(bootstrap, topic, schema_path):
    with open(schema_path) as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    seen, scopes, invalid, records = set(), {}, [], 0
    for msg in read_all(bootstrap, topic):
        records += 1
        problems, event = problems_of(msg, validator)
        if problems:
            invalid.append({"partition": msg.partition(), "offset": msg.offset(), "problems": problems[:3]})
            continue
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        tenants = [("key", event["key_id"])] + [
            (kind, event.get(field))
            for kind, field in [("team", "team_id"), ("user", "user_id"), ("customer", "customer_id"), ("org", "organization_id")]
        ]
        for kind, value in tenants:
            if value is not None:
                scope = f"{kind}/{value}"
                scopes[scope] = scopes.get(scope, 0) + event["cost_nano_usd"]
    print(json.dumps({"records": records, "events": len(seen), "duplicates": records - len(invalid) - len(seen),
                      "invalid": invalid, "scopes": scopes}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
