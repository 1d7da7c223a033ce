#!/usr/bin/env python3
"""Where a process's resident memory is: /proc/PID/smaps grouped by what each mapping is.

Usage: smaps.py PID LABEL. Prints one JSON line: VmRSS and the resident KiB of each group, and
the process's thread count by thread name. Groups, by how the mapping looks (no symbols needed):
  binary       file-backed mappings of the executable and shared libraries
  stacks       anonymous mappings right after a guard page (---p) of a thread's stack, up to
               8 MiB + guard: every thread's stack (Rust threads 2 MiB, librdkafka's 8 MiB)
  glibc-arenas anonymous mappings inside a 64 MiB-aligned glibc malloc arena (librdkafka and
               other C code allocate with malloc; mimalloc serves only Rust's allocations)
  heap         the [heap] (brk) mapping: glibc's main arena
  mimalloc     mappings the kernel names [anon:mimalloc], else other anonymous mappings of
               32 MiB or more (mimalloc's arenas)
  other-anon   every other anonymous mapping
"""
import collections
import json
import re
import sys

MIB = 1024 * 1024
HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def mappings(pid):
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if current:
                    yield current
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                current = {"start": start, "end": end, "perms": m.group(3), "name": m.group(4), "rss": 0}
            elif line.startswith("Rss:") and current:
                current["rss"] = int(line.split()[1])
    if current:
        yield current


def classify(maps):
    groups = collections.Counter()
    previous = None
    for m in maps:
        size = m["end"] - m["start"]
        name = m["name"]
        if name.startswith("/"):
            group = "binary"
        elif name == "[anon:mimalloc]":
            group = "mimalloc"
        elif name == "[heap]":
            group = "heap"
        elif name.startswith("["):
            group = "other-anon"
        elif previous and previous["perms"] == "---p" and previous["end"] == m["start"] and size <= 8 * MIB + 4096 and size != 64 * MIB - (previous["end"] - previous["start"]):
            group = "stacks"
        elif m["start"] % (64 * MIB) == 0 and size < 64 * MIB:
            group = "glibc-arenas"
        elif size >= 32 * MIB:
            group = "mimalloc"
        else:
            group = "other-anon"
        groups[group] += m["rss"]
        previous = m
    return groups


def threads(pid):
    import os
    names = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[re.sub(r"[0-9]+$", "#", f.read().strip())] += 1
        except OSError:
            pass
    return names


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def smaps_rollup(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def main():
    pid, label = sys.argv[1], sys.argv[2]
    groups = classify(mappings(pid))
    names = threads(pid)
    rollup = smaps_rollup(pid)
    print(json.dumps({
        "label": label,
        "vm_rss_kib": vm(pid, "VmRSS"),
        "rss_anon_kib": vm(pid, "RssAnon"),
        "rss_file_kib": vm(pid, "RssFile"),
        "anon_huge_pages_kib": rollup.get("AnonHugePages", 0),
        "groups_kib": dict(sorted(groups.items())),
        "threads": sum(names.values()),
        "thread_names": dict(sorted(names.items())),
    }))


if __name__ == "__main__":
    main()
