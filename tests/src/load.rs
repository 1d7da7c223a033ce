//! Load over a set of gateways that changes while it runs (restarts, kills, cut-overs), with
//! every request's outcome recorded by its own request id, and the check that the event ledger
//! holds exactly the answered requests.

use crate::clients::{error_code, request_body};
use crate::ledger::wait_for_layer1;
use anyhow::{ensure, Result};
use scylla::client::session::Session;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients saw, by request id.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Answered 200: (request id, the cost the gateway reported).
    pub answered: Vec<(String, i64)>,
    /// Refused with an error envelope, by error code.
    pub refused: BTreeMap<String, usize>,
    /// The request could not be sent or its answer not read (a gateway killed or stopped
    /// mid-way): it may or may not have been served and charged.
    pub unknown: Vec<String>,
    /// Any other answer: (request id, status, error code).
    pub failed: Vec<(String, u16, String)>,
}

/// Clients that keep sending chat completions with `keys` to the gateways `targets` holds
/// (change it as gateways come and go), until [`RotatingLoad::finish`]. One in four is streamed.
pub struct RotatingLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Outcomes>>,
}

impl RotatingLoad {
    pub fn start(targets: Arc<Mutex<Vec<String>>>, keys: Vec<String>, workers: usize) -> RotatingLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let run = crate::unique("load-");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        let tasks = (0..workers)
            .map(|w| {
                let (client, targets, stop, keys) = (client.clone(), targets.clone(), stop.clone(), keys.clone());
                let (answered, run) = (answered.clone(), run.clone());
                tokio::spawn(async move {
                    let mut out = Outcomes::default();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let gw = targets.lock().ok().and_then(|t| t.get((w + i) % t.len().max(1)).cloned());
                        let Some(gw) = gw else {
                            // No gateway in the list for a moment; decides nothing.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let id = format!("{run}-{w}-{i}");
                        let key = &keys[(w + i) % keys.len()];
                        let (mut body, price, _) = request_body(w * 1_000_000 + i);
                        // One request in four is streamed: answered once `[DONE]` arrived, at the
                        // price computed apart (the mock reports the tokens it was asked for).
                        let streamed = i.is_multiple_of(4);
                        body["stream"] = streamed.into();
                        let sent = client
                            .post(format!("{gw}/v1/chat/completions"))
                            .bearer_auth(key)
                            .header("x-request-id", &id)
                            .json(&body)
                            .send()
                            .await;
                        let resp = match sent {
                            Ok(resp) => resp,
                            Err(_) => {
                                out.unknown.push(id);
                                // Paces the retries while a gateway is away; decides nothing.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let status = resp.status().as_u16();
                        let cost = resp
                            .headers()
                            .get("x-tollgate-cost-nano-usd")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i64>().ok());
                        let cost = if streamed { Some(price) } else { cost };
                        match (status, cost) {
                            (200, Some(cost)) => match resp.bytes().await {
                                Ok(read) if !streamed || read.windows(12).any(|w| w == b"data: [DONE]") => {
                                    out.answered.push((id, cost));
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                // A stream cut before its end: the client cannot tell what it paid.
                                Ok(_) | Err(_) => out.unknown.push(id),
                            },
                            (400..=499, _) => {
                                let (_, code, _) = error_code(resp).await;
                                *out.refused.entry(code).or_default() += 1;
                            }
                            _ => {
                                let (_, code, _) = error_code(resp).await;
                                out.failed.push((id, status, code));
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        RotatingLoad { stop, answered, tasks }
    }

    /// Requests answered 200 so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests beyond those answered now have been answered.
    pub async fn answer_more(&self, more: usize) -> Result<()> {
        let target = self.answered() + more;
        crate::eventually(&format!("{target} answered requests"), Duration::from_secs(120), || async {
            Ok((self.answered() >= target).then_some(()))
        })
        .await
    }

    pub async fn finish(self) -> Result<Outcomes> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Outcomes::default();
        for t in self.tasks {
            let out = t.await?;
            all.answered.extend(out.answered);
            all.unknown.extend(out.unknown);
            all.failed.extend(out.failed);
            for (code, n) in out.refused {
                *all.refused.entry(code).or_default() += n;
            }
        }
        Ok(all)
    }
}

/// How the event ledger compares with what the clients saw.
#[derive(Debug)]
pub struct LedgerMatch {
    /// Events of requests whose outcome the client did not learn (served and charged, but the
    /// answer was lost with its gateway).
    pub charged_unknown: usize,
    /// All events of the load in the ledger.
    pub events: usize,
}

/// Waits for every answered request to be in the event ledger of `ks`, then checks: each once,
/// at the cost the client was told; the ledger's other events of this load are requests whose
/// outcome was unknown, never ones that failed or were refused. `others` events not of this
/// load (warm-up requests) may be there too. Every answered request has its event, a gateway
/// killed with `kill -9` included: an answer goes once its event is in the spool
/// (`spool.answer_after`, docs/design.md §3.6).
pub async fn assert_ledger_matches(session: &Session, ks: &str, seen: &Outcomes, others: usize) -> Result<LedgerMatch> {
    let wanted: Vec<&str> = seen.answered.iter().map(|(id, _)| id.as_str()).collect();
    let ledger: HashMap<String, (i64, usize)> = wait_for_layer1(session, ks, &wanted).await?;
    for (id, cost) in &seen.answered {
        let got = ledger.get(id).copied();
        ensure!(got == Some((*cost, 1)), "request {id}: ledger (cost, copies) {got:?}, answered {cost}");
    }
    let answered: std::collections::HashSet<&str> = seen.answered.iter().map(|(id, _)| id.as_str()).collect();
    let unknown: std::collections::HashSet<&str> = seen.unknown.iter().map(String::as_str).collect();
    let mut charged_unknown = 0;
    let mut strangers = Vec::new();
    for (id, (_, copies)) in &ledger {
        ensure!(*copies == 1, "request {id} is in the event ledger {copies} times");
        if answered.contains(id.as_str()) {
            continue;
        }
        if unknown.contains(id.as_str()) {
            charged_unknown += 1;
        } else {
            strangers.push(id.as_str());
        }
    }
    ensure!(
        strangers.len() <= others,
        "events for requests never answered: {:?}",
        &strangers[..strangers.len().min(5)]
    );
    Ok(LedgerMatch { charged_unknown, events: ledger.len() })
}
