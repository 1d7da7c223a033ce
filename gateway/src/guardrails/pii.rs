//! PII masking: e-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs (mod-97
//! checked) and IP addresses are replaced with placeholders (`<EMAIL_1>`) before the provider
//! sees the prompt, and put back in the answer, whole or streamed (a placeholder split across
//! chunks is held until it is complete). The originals live only in the request's [`Masks`].

use serde::Deserialize;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// What can be masked (`pii_entities`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Entity {
    Email,
    Phone,
    CreditCard,
    Iban,
    IpAddress,
}

impl Entity {
    const ALL: [Entity; 5] = [Entity::CreditCard, Entity::Iban, Entity::Email, Entity::IpAddress, Entity::Phone];

    fn label(self) -> &'static str {
        match self {
            Entity::Email => "EMAIL",
            Entity::Phone => "PHONE",
            Entity::CreditCard => "CARD",
            Entity::Iban => "IBAN",
            Entity::IpAddress => "IP",
        }
    }
}

/// Longest placeholder: `<` label `_` up to 6 digits `>`.
const MAX_PLACEHOLDER_BYTES: usize = 13;
/// Most values one request may have masked; beyond, the same placeholder numbers are not issued
/// and the rest is masked as `<REDACTED>` (not restored).
const MAX_MASKS: usize = 100_000;

fn re(pattern: &str) -> regex::Regex {
    // The patterns are constants checked by the tests below.
    #[allow(clippy::unwrap_used)]
    regex::Regex::new(pattern).unwrap()
}

static EMAIL: LazyLock<regex::Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"));
static CARD: LazyLock<regex::Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){12,18}\b"));
static IBAN: LazyLock<regex::Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static IPV4: LazyLock<regex::Regex> = LazyLock::new(|| re(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
static IPV6: LazyLock<regex::Regex> = LazyLock::new(|| re(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"));
static PHONE: LazyLock<regex::Regex> =
    LazyLock::new(|| re(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}"));
static PLACEHOLDER: LazyLock<regex::Regex> = LazyLock::new(|| re(r"<(EMAIL|PHONE|CARD|IBAN|IP)_(\d{1,6})>"));

#[derive(Debug)]
pub struct Pii {
    entities: Vec<Entity>,
}

impl Pii {
    pub fn new(entities: Option<&[Entity]>) -> Pii {
        let chosen = entities.unwrap_or(&Entity::ALL);
        // Always in the order of `ALL`: cards and IBANs before phones, whose digits they hold.
        Pii { entities: Entity::ALL.into_iter().filter(|e| chosen.contains(e)).collect() }
    }

    /// `text` with each value found replaced by its placeholder in `masks`.
    pub fn mask(&self, text: &str, masks: &mut Masks) -> Option<String> {
        let mut out: Option<String> = None;
        for &entity in &self.entities {
            let current = out.as_deref().unwrap_or(text);
            if let Some(next) = mask_one(entity, current, masks) {
                out = Some(next);
            }
        }
        out
    }
}

type Detector = (&'static regex::Regex, fn(&str) -> bool);

fn email(_: &str) -> bool {
    true
}

fn ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok()
}

fn ipv6(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok()
}

/// The patterns that find `entity`, each with the check a match must pass.
fn detectors(entity: Entity) -> [Option<Detector>; 2] {
    match entity {
        Entity::Email => [Some((&EMAIL, email)), None],
        Entity::CreditCard => [Some((&CARD, luhn)), None],
        Entity::Iban => [Some((&IBAN, iban)), None],
        Entity::IpAddress => [Some((&IPV4, ipv4)), Some((&IPV6, ipv6))],
        Entity::Phone => [Some((&PHONE, phone)), None],
    }
}

fn mask_one(entity: Entity, text: &str, masks: &mut Masks) -> Option<String> {
    let mut out: Option<String> = None;
    for (regex, valid) in detectors(entity).into_iter().flatten() {
        let current = out.as_deref().unwrap_or(text);
        let mut next = String::new();
        let mut at = 0;
        for m in regex.find_iter(current).filter(|m| valid(m.as_str())) {
            next.push_str(&current[at..m.start()]);
            next.push_str(&masks.placeholder(entity, m.as_str()));
            at = m.end();
        }
        if at > 0 {
            next.push_str(&current[at..]);
            out = Some(next);
        }
    }
    out
}

/// The Luhn check of a card number (separators allowed), 13 to 19 digits.
pub fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 check of an IBAN (spaces allowed): 15 to 34 characters, mod 97 equal to 1.
pub fn iban(candidate: &str) -> bool {
    let compact: Vec<char> = candidate.chars().filter(|c| *c != ' ').collect();
    if !(15..=34).contains(&compact.len()) || !compact.iter().all(char::is_ascii_alphanumeric) {
        return false;
    }
    let rotated = compact[4..].iter().chain(&compact[..4]);
    let mut rest: u32 = 0;
    for c in rotated {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rest = if value < 10 { (rest * 10 + value) % 97 } else { (rest * 100 + value) % 97 };
    }
    rest == 1
}

/// A phone number has 7 to 15 digits (E.164).
fn phone(candidate: &str) -> bool {
    let digits = candidate.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
}

/// One request's masked values, by placeholder; the same value gets the same placeholder.
#[derive(Debug, Default)]
pub struct Masks {
    originals: HashMap<String, String>,
    placeholders: HashMap<String, String>,
    counts: HashMap<Entity, u32>,
}

impl Masks {
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    fn placeholder(&mut self, entity: Entity, value: &str) -> String {
        if let Some(p) = self.placeholders.get(value) {
            return p.clone();
        }
        if self.originals.len() >= MAX_MASKS {
            return "<REDACTED>".to_owned();
        }
        let n = self.counts.entry(entity).or_default();
        *n += 1;
        let p = format!("<{}_{}>", entity.label(), n);
        self.originals.insert(p.clone(), value.to_owned());
        self.placeholders.insert(value.to_owned(), p.clone());
        p
    }

    /// `text` with the placeholders of this request put back; `None` when it holds none.
    pub fn restore(&self, text: &str) -> Option<String> {
        if self.originals.is_empty() || !text.contains('<') {
            return None;
        }
        let mut changed = false;
        let out = PLACEHOLDER.replace_all(text, |c: &regex::Captures<'_>| match self.originals.get(&c[0]) {
            Some(original) => {
                changed = true;
                original.clone()
            }
            None => c[0].to_owned(),
        });
        changed.then(|| out.into_owned())
    }
}

/// Restores placeholders in one streamed text: an unfinished placeholder at the end of a chunk
/// is held back and joined to the next one.
#[derive(Debug, Default)]
pub struct StreamRestore {
    held: String,
}

impl StreamRestore {
    /// The text that can go now.
    pub fn push(&mut self, masks: &Masks, chunk: &str) -> String {
        self.held.push_str(chunk);
        let keep_from = match self.held.rfind('<') {
            Some(i) if could_be_placeholder(&self.held[i..]) => i,
            _ => self.held.len(),
        };
        let ready: String = self.held.drain(..keep_from).collect();
        masks.restore(&ready).unwrap_or(ready)
    }

    /// What is still held, at the end of the text.
    pub fn finish(&mut self, masks: &Masks) -> String {
        let rest = std::mem::take(&mut self.held);
        masks.restore(&rest).unwrap_or(rest)
    }
}

/// Whether `s` (from a `<`) is the beginning of a placeholder not yet complete.
fn could_be_placeholder(s: &str) -> bool {
    s.len() < MAX_PLACEHOLDER_BYTES
        && !s.contains('>')
        && s[1..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_card_numbers_only() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234"));
    }

    #[test]
    fn iban_checks_mod_97() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("DE8937040044"));
    }

    #[test]
    fn masks_each_entity_and_restores_it() {
        let pii = Pii::new(None);
        let mut masks = Masks::default();
        let text = "mail ann@example.com or bob@example.org, card 4111 1111 1111 1111, not 4111 1111 1111 1112, \
                    iban DE89370400440532013000, ip 192.168.1.20 and 2001:db8::1, call +44 20 7946 0958; \
                    ann@example.com again";
        let masked = pii.mask(text, &mut masks).unwrap();
        for secret in ["ann@example.com", "4111 1111 1111 1111", "DE8937", "192.168.1.20", "2001:db8::1", "7946"] {
            assert!(!masked.contains(secret), "{secret} left in {masked}");
        }
        assert!(masked.contains("4111 1111 1111 1112"), "a number failing Luhn is kept: {masked}");
        assert!(masked.contains("<EMAIL_1>") && masked.contains("<EMAIL_2>") && masked.contains("<CARD_1>"));
        assert_eq!(masked.matches("<EMAIL_1>").count(), 2, "the same value, the same placeholder");
        assert_eq!(masks.restore(&masked).unwrap(), text);
        assert!(pii.mask("nothing personal here at 12:30", &mut Masks::default()).is_none());
    }

    #[test]
    fn only_chosen_entities_are_masked() {
        let pii = Pii::new(Some(&[Entity::Email]));
        let mut masks = Masks::default();
        let masked = pii.mask("a@b.io from 10.0.0.1", &mut masks).unwrap();
        assert_eq!(masked, "<EMAIL_1> from 10.0.0.1");
    }

    #[test]
    fn placeholders_split_across_chunks_are_restored() {
        let pii = Pii::new(None);
        let mut masks = Masks::default();
        let masked = pii.mask("write to ann@example.com and 10.1.2.3", &mut masks).unwrap();
        for size in 1..6 {
            let mut restore = StreamRestore::default();
            let mut out = String::new();
            let chars: Vec<char> = masked.chars().collect();
            for piece in chars.chunks(size) {
                out.push_str(&restore.push(&masks, &piece.iter().collect::<String>()));
            }
            out.push_str(&restore.finish(&masks));
            assert_eq!(out, "write to ann@example.com and 10.1.2.3", "chunks of {size}");
        }
    }

    #[test]
    fn a_lone_angle_bracket_is_not_held_forever() {
        let masks = Masks::default();
        let mut restore = StreamRestore::default();
        assert_eq!(restore.push(&masks, "a < b"), "a < b");
        assert_eq!(restore.push(&masks, "x <EM"), "x ");
        assert_eq!(restore.push(&masks, "AIL_9> done"), "<EMAIL_9> done", "an unknown placeholder passes");
        assert_eq!(restore.push(&masks, "<"), "");
        assert_eq!(restore.finish(&masks), "<");
    }
}
