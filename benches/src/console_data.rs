//! The console bench's data set (`benches/console`), generated the same way every time from its
//! size: keys with their team, user, alias and metadata, their teams and users, and usage events
//! spread over the last 31 days. Deterministic, so a load interrupted half-way and run again
//! writes the same rows.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tollgate_schemas::tenancy::{KeyRecord, Limits, TeamRecord, UserRecord};
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::{NoContext, Timestamp, Uuid};

/// Keys a team (and a user) has.
pub const KEYS_PER_TEAM: u64 = 100;
/// The models events name, evenly.
pub const MODELS: [&str; 3] = ["gpt-4o-mini", "gpt-4o", "claude-sonnet"];
/// Days the events span, ending now.
pub const DAYS: i64 = 31;
/// Partitions of the usage topic the folded rows are spread over (by key).
pub const PARTITIONS: u64 = 8;

/// The data set's size.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub keys: u64,
    pub events: u64,
}

impl Size {
    pub fn teams(&self) -> u64 {
        self.keys.div_ceil(KEYS_PER_TEAM).max(1)
    }

    /// Key `k`'s events: an even share, the first keys one more.
    pub fn events_of(&self, k: u64) -> u64 {
        let keys = self.keys.max(1);
        self.events / keys + u64::from(k < self.events % keys)
    }
}

/// Key `k`'s id (its token): the SHA-256 of a name only this bench uses.
pub fn key_id(k: u64) -> String {
    hex::encode(Sha256::digest(format!("bench-console-key-{k}").as_bytes()))
}

pub fn team_of(k: u64, size: Size) -> String {
    format!("team-{}", k % size.teams())
}

/// Users a team has (its keys spread over them).
pub const USERS_PER_TEAM: u64 = 5;

pub fn user_of(k: u64, size: Size) -> String {
    format!("user-{}-{}", k % size.teams(), (k / size.teams()) % USERS_PER_TEAM)
}

/// The partition of the usage topic key `k`'s events are folded in: its team's, so that the
/// rows of a team and of its users are in one partition.
pub fn partition_of(k: u64, size: Size) -> u64 {
    (k % size.teams()) % PARTITIONS
}

/// Key `k`: created over the last year in order, one key in four with a budget.
pub fn key(k: u64, size: Size, now: DateTime<Utc>) -> KeyRecord {
    let year_us = 365 * 86_400_000_000_i64;
    let step = year_us / i64::try_from(size.keys.max(1)).unwrap_or(1);
    let created = now - Duration::microseconds(year_us - step * i64::try_from(k).unwrap_or(0));
    let mut metadata = serde_json::Map::new();
    metadata.insert("env".into(), json!(["prod", "dev", "staging"][(k % 3) as usize]));
    metadata.insert("cost_center".into(), json!(format!("cc-{}", k % 1000)));
    KeyRecord {
        key_id: key_id(k),
        key_name: format!("sk-...{:04}", k % 10_000),
        key_alias: Some(format!("svc-{k}")),
        team_id: Some(team_of(k, size)),
        user_id: Some(user_of(k, size)),
        limits: Limits { max_budget: k.is_multiple_of(4).then_some(NanoUsd(50_000_000)), ..Limits::default() },
        metadata,
        created_at: Some(created),
        updated_at: Some(created),
        ..KeyRecord::default()
    }
}

pub fn team(t: u64) -> TeamRecord {
    TeamRecord {
        team_id: format!("team-{t}"),
        team_alias: Some(format!("Team {t}")),
        limits: Limits { max_budget: Some(NanoUsd(100_000_000_000)), ..Limits::default() },
        ..TeamRecord::default()
    }
}

/// User `u` of team `t`.
pub fn user(t: u64, u: u64) -> UserRecord {
    UserRecord { user_id: format!("user-{t}-{u}"), ..UserRecord::default() }
}

/// Event `j` of key `k`: within the last [`DAYS`] days, its model, tokens and cost from `j`.
pub fn event(k: u64, j: u64, size: Size, now: DateTime<Utc>) -> UsageEvent {
    let spread = (k.wrapping_mul(2_654_435_761).wrapping_add(j.wrapping_mul(40_503))) % (DAYS as u64 * 86_400);
    let at = now - Duration::seconds(i64::try_from(spread).unwrap_or(0) + 60);
    let prompt = 100 + (k + j) % 900;
    let completion = 10 + (k * 7 + j) % 300;
    let model = MODELS[((k + j) % 3) as usize];
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: Uuid::new_v7(Timestamp::from_unix(NoContext, secs, ((k * 31 + j) % 1_000_000_000) as u32)),
        occurred_at: at,
        gateway_id: "bench-console".into(),
        request_id: format!("bench-console-{k}-{j}"),
        key_id: key_id(k),
        key_alias: Some(format!("svc-{k}")),
        team_id: Some(team_of(k, size)),
        user_id: Some(user_of(k, size)),
        requested_model: model.into(),
        served_model: Some(model.into()),
        provider: Some("openai".into()),
        deployment: Some(format!("openai/{model}#0")),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_nano_usd: NanoUsd(i64::try_from(prompt * 150 + completion * 600).unwrap_or(0)),
        latency_ms: 250 + j % 500,
        status: 200,
        stream: j.is_multiple_of(2),
        ..UsageEvent::default()
    }
}
