//! The file and batch ids Tollgate hands its clients: the provider's id wrapped with where it
//! lives and whose it is, authenticated by a MAC every gateway of the deployment can check, so
//! that any gateway, restarted or not, serves a file or a batch without asking a database or a
//! provider who owns it (docs/design.md §2.13, "Ids").
//!
//! An id is `file-tg1` or `batch_tg1` followed by the URL-safe base64 (no padding) of
//!
//! ```text
//! kind (1) | endpoint (1) | deployment tag (8) | owner tag (16) | model tag (8) | n (1) | provider id (n) | MAC (16)
//! ```
//!
//! The tags are keyed digests (HMAC-SHA-256 under the id secret, truncated) of the deployment's
//! family, `api_base` and key, of the owner's key id and of the model group's name; the MAC is
//! HMAC-SHA-256 over everything before it, truncated to 128 bits and compared in constant time.
//! Nothing secret is in an id: a provider key only as a keyed digest of it. An id that is too
//! long, not of this shape, or whose MAC does not match is nothing ([`IdCodec::open`] says
//! `None`), never an error that tells why.

use super::upstream::good_id;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest id this gateway hands out or reads: longer ones are refused before decoding.
pub const MAX_ID_CHARS: usize = 256;
/// The shortest id secret accepted (`gateway.batches.id_secret`).
pub const MIN_SECRET_BYTES: usize = 32;

const FILE_PREFIX: &str = "file-tg1";
const BATCH_PREFIX: &str = "batch_tg1";
const MAC_BYTES: usize = 16;
/// Everything before the provider id.
const HEAD_BYTES: usize = 1 + 1 + 8 + 16 + 8 + 1;
/// The longest provider id carried (`upstream::good_id`).
const MAX_PROVIDER_ID: usize = 63;

/// A tag of the deployment whose provider account holds the file or batch.
pub type DeploymentTag = [u8; 8];
/// A tag of the key that owns it.
pub type OwnerTag = [u8; 16];
/// A tag of the model group it was made for.
pub type ModelTag = [u8; 8];

/// What an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Batch,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::File => b'f',
            Kind::Batch => b'b',
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::File => FILE_PREFIX,
            Kind::Batch => BATCH_PREFIX,
        }
    }
}

/// The endpoint a file's lines call (an output or error file calls none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    None,
    ChatCompletions,
    Embeddings,
}

impl Endpoint {
    pub fn of(url: &str) -> Endpoint {
        match url {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/embeddings" => Endpoint::Embeddings,
            _ => Endpoint::None,
        }
    }

    pub fn url(self) -> &'static str {
        match self {
            Endpoint::None => "",
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Endpoint::None => 0,
            Endpoint::ChatCompletions => 1,
            Endpoint::Embeddings => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Endpoint> {
        match b {
            0 => Some(Endpoint::None),
            1 => Some(Endpoint::ChatCompletions),
            2 => Some(Endpoint::Embeddings),
            _ => None,
        }
    }
}

/// What an id carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    pub kind: Kind,
    pub endpoint: Endpoint,
    pub deployment: DeploymentTag,
    pub owner: OwnerTag,
    pub model: ModelTag,
    /// The provider's own id (`upstream::good_id`).
    pub provider_id: String,
}

/// Seals and opens ids under the deployment's id secret.
pub struct IdCodec {
    mac: HmacSha256,
}

impl IdCodec {
    /// A codec under `secret` (at least [`MIN_SECRET_BYTES`], checked when the config is read).
    pub fn new(secret: &[u8]) -> IdCodec {
        // HMAC takes a key of any length: this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        IdCodec { mac }
    }

    fn digest(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(label);
        for part in parts {
            // Length-prefixed, so that no two lists of parts digest the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The tag of the provider account a deployment calls: its family, `api_base` and key.
    pub fn deployment_tag(&self, family: &str, api_base: &str, api_key: Option<&str>) -> DeploymentTag {
        let d = self.digest(
            b"tollgate-id-deployment",
            &[family.as_bytes(), api_base.as_bytes(), api_key.unwrap_or("").as_bytes()],
        );
        first(&d)
    }

    pub fn owner_tag(&self, key_id: &str) -> OwnerTag {
        first(&self.digest(b"tollgate-id-owner", &[key_id.as_bytes()]))
    }

    pub fn model_tag(&self, model: &str) -> ModelTag {
        first(&self.digest(b"tollgate-id-model", &[model.as_bytes()]))
    }

    /// The id of `w`; `None` when its provider id is out of bounds (it is then not passed on).
    pub fn seal(&self, w: &Wrapped) -> Option<String> {
        use base64::Engine;
        if !good_id(&w.provider_id) {
            return None;
        }
        let mut bytes = Vec::with_capacity(HEAD_BYTES + w.provider_id.len() + MAC_BYTES);
        bytes.push(w.kind.byte());
        bytes.push(w.endpoint.byte());
        bytes.extend_from_slice(&w.deployment);
        bytes.extend_from_slice(&w.owner);
        bytes.extend_from_slice(&w.model);
        bytes.push(u8::try_from(w.provider_id.len()).ok()?);
        bytes.extend_from_slice(w.provider_id.as_bytes());
        let mut mac = self.mac.clone();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        let id = format!("{}{}", w.kind.prefix(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        (id.len() <= MAX_ID_CHARS).then_some(id)
    }

    /// What the id `id` of kind `kind` carries, if this gateway's deployment made it.
    pub fn open(&self, kind: Kind, id: &str) -> Option<Wrapped> {
        use base64::Engine;
        if id.len() > MAX_ID_CHARS {
            return None;
        }
        let encoded = id.strip_prefix(kind.prefix())?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
        if bytes.len() < HEAD_BYTES + 1 + MAC_BYTES || bytes.len() > HEAD_BYTES + MAX_PROVIDER_ID + MAC_BYTES {
            return None;
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        if body[0] != kind.byte() || usize::from(body[HEAD_BYTES - 1]) != body.len() - HEAD_BYTES {
            return None;
        }
        let provider_id = std::str::from_utf8(&body[HEAD_BYTES..]).ok().filter(|p| good_id(p))?.to_owned();
        Some(Wrapped {
            kind,
            endpoint: Endpoint::from_byte(body[1])?,
            deployment: first(&body[2..10]),
            owner: first(&body[10..26]),
            model: first(&body[26..34]),
            provider_id,
        })
    }
}

/// The first `N` bytes of `bytes` (which holds at least that many).
fn first<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests;
