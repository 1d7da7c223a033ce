#!/usr/bin/env python3
"""The soak's report (benches/soak/run): reads its raw lines and prints markdown.

usage: report.py RAW.jsonl WARMUP_SECS SOAK_SECS MACHINE_FACTS

Memory: the growth is the mean RSS of the last sixth of the soak minus that of the sixth right
after the warm-up (the aim: at most 2 MB). Tails: for each kind, the median p99 of the slices in
the first and the last third after the warm-up, and their ratio (flat is about 1). Money: the
ledger against ground truth, both exact integers.
"""

import json
import statistics
import sys

RSS_AIM_KIB = 2 * 1024


def main() -> None:
    raw, warmup, soak, facts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    lines = [json.loads(line) for line in open(raw, encoding="utf-8") if line.strip()]
    probes = [line for line in lines if line.get("phase") == "probe"]
    slices = [line for line in lines if line.get("phase") == "soak"]
    rss = next((line["samples"] for line in lines if line.get("phase") == "rss"), [])
    money = next((line for line in lines if line.get("phase") == "money"), {})

    print(f"# Soak — {soak // 60} minutes at half the sustained rate\n")
    print(facts)
    print("- Tollgate on 1 worker, one virtual key with a 30-day hard budget, rpm and tpm limits,")
    print("  credit leases on, usage events to Kafka folded by a ledger consumer into Cassandra")
    print("  (deploy/local, single nodes on the same machine); the mock provider, no added latency.")
    print("- Load: `tollgate-load` at c=64, open loop (`--rate`), slices alternating non-streamed and")
    print("  streamed; each kind at half the rate its c=64 closed-loop probe sustained in this run.\n")

    print("## Probes (c=64, closed loop)\n")
    print("| kind | requests | RPS | p50 µs | p99 µs | CPU-µs/req | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for p in probes:
        print(
            f"| {p['label']} | {p['requests']} | {p['rps']} | {p['p50_us']} | {p['p99_us']} |"
            f" {p.get('cpu_us_per_req')} | {p['errors']} |"
        )

    print("\n## Memory\n")
    if rss:
        window = max(1, (soak - warmup) // 6)
        after = [s["kib"] for s in rss if warmup <= s["s"] < warmup + window]
        last = [s["kib"] for s in rss if s["s"] >= soak - window]
        if after and last:
            growth = statistics.mean(last) - statistics.mean(after)
            verdict = "met" if growth <= RSS_AIM_KIB else "**missed**"
            print(
                f"RSS sampled every 5 s ({len(rss)} samples): {rss[0]['kib'] / 1024:.1f} MB at the start of the soak,"
                f" mean {statistics.mean(after) / 1024:.1f} MB in the {window} s after the {warmup} s warm-up,"
                f" mean {statistics.mean(last) / 1024:.1f} MB in the last {window} s, peak"
                f" {max(s['kib'] for s in rss) / 1024:.1f} MB. **Growth after warm-up: {growth / 1024:+.2f} MB**"
                f" (aim ≤ 2 MB: {verdict}).\n"
            )
        print("| s | RSS MB |")
        print("|--:|--:|")
        step = max(1, len(rss) // 30)
        for s in rss[::step]:
            print(f"| {s['s']} | {s['kib'] / 1024:.1f} |")

    print("\n## Tails, slice by slice\n")
    others = [s["others_cores"] for s in slices if s.get("others_cores") is not None]
    if others:
        busy = statistics.median(others)
        print(
            f"Processes other than the gateway and the load generator used a median of {busy:.2f} cores"
            f" (of {len(others)} slices, max {max(others):.2f}): Kafka, Cassandra, the ledger consumer and"
            " the mock among them, and whatever else ran."
            + (
                " **With more than a quarter of a core beside the gateway the percentiles measure the"
                " machine as much as the gateway;** a flat p99 shows here only as no upward trend."
                if busy > 0.25
                else ""
            )
            + "\n"
        )
    for kind in ("plain", "stream"):
        mine = [s for s in slices if s["kind"] == kind and s["at_s"] >= warmup and s.get("p99_us")]
        third = max(1, len(mine) // 3)
        if len(mine) >= 2:
            first, last = statistics.median(s["p99_us"] for s in mine[:third]), statistics.median(
                s["p99_us"] for s in mine[-third:]
            )
            name = "non-streamed" if kind == "plain" else "streamed"
            print(
                f"- {name}: median p99 {first:.0f} µs in the first third after warm-up, {last:.0f} µs in the"
                f" last third (×{last / first:.2f})."
            )
    print("\n| slice | at s | kind | offered/s | achieved/s | p50 µs | p99 µs | TTFB p99 µs | errors | others' cores |")
    print("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    for s in slices:
        print(
            f"| {s['slice']} | {s['at_s']} | {s['kind']} | {s['offered_rps']} | {s['rps']} | {s['p50_us']} |"
            f" {s['p99_us']} | {s.get('ttfb_p99_us') or '–'} | {s['errors']} | {s['others_cores']} |"
        )

    print("\n## Money\n")
    if money:
        truth_events = money["answered_plain"] + money["answered_stream"]
        same = (
            str(money["ledger_spend_nano_usd"]) == str(money["truth_spend_nano_usd"])
            and str(money["ledger_events"]) == str(truth_events)
            and money["events_on_topic"] == truth_events
        )
        print("| figure | value |")
        print("|---|--:|")
        print(f"| requests answered 200, non-streamed / streamed | {money['answered_plain']} / {money['answered_stream']} |")
        print(f"| requests that failed | {money['errors']} |")
        print(
            f"| price per request from the mock's own usage, nano-USD | {money['cost_plain_nano_usd']} /"
            f" {money['cost_stream_nano_usd']} |"
        )
        print(f"| ground truth, nano-USD | {money['truth_spend_nano_usd']} |")
        print(f"| ledger `team/soak` all-time, nano-USD | {money['ledger_spend_nano_usd']} |")
        print(f"| events: on the topic / in the ledger / answered | {money['events_on_topic']} / {money['ledger_events']} / {truth_events} |")
        print(f"\n**The ledger {'equals' if same else 'does NOT equal'} ground truth.**")


if __name__ == "__main__":
    main()
