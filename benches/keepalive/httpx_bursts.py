"""The keep-alive run with the client users reported it with: one httpx.AsyncClient (its pool,
its default 5 s keep-alive expiry), bursts of chat requests round robin over gateways, idle gaps
between bursts. Prints one JSON line shaped like tollgate-keepalive's (no connection counts).

Run by benches/keepalive/run with CLIENT=httpx, in a virtualenv it makes.
"""

import argparse
import asyncio
import json
import random
import time

import httpx

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


def kind(error):
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect"
    if isinstance(error, httpx.RemoteProtocolError):
        return "closed"
    if isinstance(error, (httpx.ReadError, httpx.WriteError)):
        return "reset"
    return "other"


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", action="append", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=4_000)
    p.add_argument("--gap-min-ms", type=int, default=4_000)
    p.add_argument("--gap-max-ms", type=int, default=6_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout-secs", type=float, default=10.0)
    p.add_argument("--max-secs", type=float, default=1_800.0)
    p.add_argument("--label")
    a = p.parse_args()
    rng = random.Random(a.seed)
    urls = [f"{g.rstrip('/')}/v1/chat/completions" for g in a.gateway]
    limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
    report = {"requests": 0, "bursts": 0, "statuses": {}, "transport": {}, "transport_errors": 0,
              "failed_bursts": [], "first_transport_error": None}
    started = time.monotonic()
    gap = None
    async with httpx.AsyncClient(limits=limits, timeout=a.timeout_secs,
                                 headers={"authorization": f"Bearer {a.key}"}) as client:
        next_index = 0
        while report["requests"] < a.requests and time.monotonic() - started < a.max_secs:
            count = min(a.burst, a.requests - report["requests"])
            end = next_index + count
            failures = 0

            async def worker():
                nonlocal next_index, failures
                while next_index < end:
                    i = next_index
                    next_index += 1
                    try:
                        r = await client.post(urls[i % len(urls)], json=BODY)
                        report["statuses"][str(r.status_code)] = report["statuses"].get(str(r.status_code), 0) + 1
                    except httpx.HTTPError as e:
                        failures += 1
                        k = kind(e)
                        report["transport"][k] = report["transport"].get(k, 0) + 1
                        if report["first_transport_error"] is None:
                            report["first_transport_error"] = f"{type(e).__name__}: {e}"

            await asyncio.gather(*(worker() for _ in range(a.concurrency)))
            report["requests"] += count
            report["transport_errors"] += failures
            if failures:
                report["failed_bursts"].append({"burst": report["bursts"], "gap_ms": gap, "failures": failures})
            report["bursts"] += 1
            if report["requests"] >= a.requests:
                break
            gap = rng.randint(a.gap_min_ms, a.gap_max_ms)
            await asyncio.sleep(gap / 1000)
    report.update(elapsed_s=time.monotonic() - started, label=a.label, concurrency=a.concurrency,
                  burst=a.burst, gateways=len(urls), client=f"httpx {httpx.__version__}")
    print(json.dumps(report))


asyncio.run(main())
