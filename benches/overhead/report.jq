# Turns the raw lines of benches/overhead/run (one JSON object per load run, with `target`,
# `scenario` and `round` added) into the markdown tables of the results file.
# Input: the raw lines, slurped (jq -s). Output: raw markdown (jq -r).

def median:
  map(select(. != null)) | sort | length as $n
  | if $n == 0 then null
    elif $n % 2 == 1 then .[($n - 1) / 2]
    else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;

# Numbers for tables: one decimal, an en dash when absent.
def f1: if . == null then "–" else (. * 10 | round / 10 | tostring) end;
def f2: if . == null then "–" else (. * 100 | round / 100 | tostring) end;
def signed: if . == null then "–" elif . >= 0 then "+" + f1 else f1 end;
def sub($a; $b): if $a == null or $b == null then null else $a - $b end;
def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def verdict($ok): if $ok == null then "not measured" elif $ok then "**met**" else "**missed**" end;

def scenarios: ["c1", "c1-stream", "c64", "c64-stream"];
def targets: ["direct", "nginx", "tollgate", "tollgate-baseline", "tollgate-w2"];
def target_name:
  {"direct": "direct to mock", "nginx": "nginx proxy_pass", "tollgate": "Tollgate, 1 worker",
   "tollgate-w2": "Tollgate, 2 workers", "tollgate-baseline": "Tollgate baseline build, 1 worker"}[.] // .;
def cpu_of:
  {"direct": "mock", "nginx": "nginx worker", "tollgate": "gateway", "tollgate-baseline": "gateway",
   "tollgate-w2": "gateway"}[.] // "?";

# One summary per (target, scenario): the median over rounds of every figure; errors summed.
(group_by(.target + " " + .scenario)
 | map({
     key: (.[0].target + " " + .[0].scenario),
     value: {
       target: .[0].target, scenario: .[0].scenario, runs: length,
       requests: (map(.requests) | median), capped: (map(.capped) | any), concurrency: .[0].concurrency,
       others: (map(.others_cores) | max),
       rps: (map(.rps) | median), p50: (map(.p50_us) | median), p90: (map(.p90_us) | median),
       p99: (map(.p99_us) | median), max: (map(.max_us) | max),
       ttfb50: (map(.ttfb_p50_us) | median), ttfb99: (map(.ttfb_p99_us) | median),
       cpu: (map(.cpu_us_per_req) | median), loader_cpu: (map(.loader_cpu_us_per_req) | median),
       cpu_spread: (map(.cpu_us_per_req | select(. != null)) | if length > 0 then [min, max] else null end),
       errors: (map(.errors) | add),
       first_error: (map(.first_error | select(. != null)) | first)
     }
   })
 | from_entries) as $s
| def get($t; $sc): $s[$t + " " + $sc] // {};

"## Figures",
"",
"Medians over the rounds (max: the largest single request seen). CPU-µs/req is the CPU time,"
+ " all threads, of the process named in the last column but one, per timed request; for the"
+ " direct runs that is the mock itself, i.e. the cost of the upstream. Loader CPU is the load"
+ " generator's own. Others: the most CPU (in cores, averaged over a run) that processes not under"
+ " test used during any round of that row; above about 0.1 the row shared the machine.",
"",
"| scenario | target | timed req | RPS | p50 µs | p90 µs | p99 µs | max µs | TTFB p50 µs | TTFB p99 µs | CPU-µs/req (min–max) | of | loader CPU-µs/req | others, cores | errors |",
"|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
(scenarios[] as $sc | targets[] as $t | get($t; $sc) | select(.runs != null)
 | "| \($sc) | \($t | target_name) | \(.requests)\(if .capped then " (capped)" else "" end) | \(.rps | f1) | \(.p50 | f1) | \(.p90 | f1) | \(.p99 | f1) | \(.max | f1)"
   + " | \(.ttfb50 | f1) | \(.ttfb99 | f1)"
   + " | \(.cpu | f1) (\(if .cpu_spread == null then "–" else (.cpu_spread | map(f1) | join("–")) end))"
   + " | \($t | cpu_of) | \(.loader_cpu | f1) | \(.others | f2) | \(.errors) |"),
"",
"## Overhead",
"",
"Added latency is the difference of the medians against direct-to-mock in the same rounds.",
"",
"| scenario | proxy | added p50 µs | added p99 µs | added TTFB p50 µs | added TTFB p99 µs | RPS ÷ direct | RPS ÷ nginx | CPU-µs/req |",
"|---|---|--:|--:|--:|--:|--:|--:|--:|",
(scenarios[] as $sc | get("direct"; $sc) as $d | get("nginx"; $sc) as $n
 | ("nginx", "tollgate", "tollgate-baseline", "tollgate-w2") as $t | get($t; $sc) as $x | select($x.runs != null)
 | "| \($sc) | \($t | target_name) | \(sub($x.p50; $d.p50) | signed) | \(sub($x.p99; $d.p99) | signed)"
   + " | \(sub($x.ttfb50; $d.ttfb50) | signed) | \(sub($x.ttfb99; $d.ttfb99) | signed)"
   + " | \(ratio($x.rps; $d.rps) | f2) | \(if $t == "nginx" then "–" else (ratio($x.rps; $n.rps) | f2) end)"
   + " | \($x.cpu | f1) |"),
"",
"## Aims",
"",
"With auth, pricing and metering to Kafka on (non-streaming chat, the figures the aims name):",
"",
"| aim | measured | verdict |",
"|---|---|---|",
(get("tollgate"; "c64") as $g | get("nginx"; "c64") as $n
 | "| gateway CPU ≤ 20 µs per request (c=64) | \($g.cpu | f1) µs (nginx \($n.cpu | f1) µs) | \(verdict(if $g.cpu == null then null else $g.cpu <= 20 end)) |"),
(get("tollgate"; "c1") as $g | get("nginx"; "c1") as $n
 | "| gateway CPU ≤ 20 µs per request (c=1) | \($g.cpu | f1) µs (nginx \($n.cpu | f1) µs) | \(verdict(if $g.cpu == null then null else $g.cpu <= 20 end)) |"),
(get("tollgate"; "c1") as $g | get("direct"; "c1") as $d | sub($g.p50; $d.p50) as $a
 | "| added latency p50 ≤ +50 µs (c=1) | \($a | signed) µs | \(verdict(if $a == null then null else $a <= 50 end)) |"),
(get("tollgate"; "c1") as $g | get("direct"; "c1") as $d | sub($g.p99; $d.p99) as $a
 | "| added latency p99 ≤ +100 µs (c=1) | \($a | signed) µs | \(verdict(if $a == null then null else $a <= 100 end)) |"),
(get("tollgate"; "c64") as $g | get("nginx"; "c64") as $n | ratio($g.rps; $n.rps) as $q
 | "| RPS ≥ 0.8 × nginx (c=64, 1 worker each) | \($q | f2)× (\($g.rps | f1) vs \($n.rps | f1)) | \(verdict(if $q == null then null else $q >= 0.8 end)) |"),
"",
(([ $s[] | select(.errors > 0) ]) as $bad
 | if ($bad | length) == 0 then "No request failed in any run."
   else "Failed requests: " + ($bad | map("\(.target) \(.scenario): \(.errors) (first: \(.first_error))") | join("; ")) end)
,
"",
# `.` is still the slurped raw lines here.
(map(select((.attempts // 1) > 1)) | length) as $repeated
| map(select(.disturbed != null)) as $kept
| "Runs repeated because another process disturbed them: \($repeated)."
  + (if ($kept | length) == 0 then " No run kept in the figures was disturbed."
     else " Kept although still disturbed (out of retries or time): "
       + ($kept | map("\(.target) \(.scenario) round \(.round) (\(.disturbed))") | join("; ")) + "." end)
