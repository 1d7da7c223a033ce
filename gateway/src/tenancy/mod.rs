//! Who is calling: virtual keys (hashed) and their teams, users, organizations and customers,
//! cached in front of the store (`auth`), and how an admin change reaches every gateway's cache
//! (`changes`: the change log and the control topic), and the admin listing's index of keys
//! (`key_index`) and of the other records (`directory`). docs/design.md §6.

pub mod auth;
pub mod changes;
pub mod directory;
pub mod key_index;
mod mirror;
pub mod tags;
