//! Key names and the versioned envelope that carries a result between processes.
//!
//! Layout (big-endian): `b"SF"`, version `2`, codec id, status, flags (bit 0: signed),
//! generation (u64), the key's length (u32) and bytes, then the payload: the encoded value
//! (`Ok`), the error's text (`Err`), or nothing; if signed, an HMAC-SHA256 tag of the
//! namespace and everything before it ends the envelope. The fixed header lets a waiter
//! classify a message without decoding it, and the full key in it means a result is only
//! ever taken for the key it was produced for.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::config::Codec;

const MAGIC: &[u8; 2] = b"SF";
const VERSION: u8 = 2;
/// Magic, version, codec, status, flags, generation, key length.
const FIXED_LEN: usize = 2 + 1 + 1 + 1 + 1 + 8 + 4;
const SIGNED: u8 = 1;
const TAG_LEN: usize = 32;

/// What a leader reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The payload is the value.
    Ok = 0,
    /// The payload is the error's text.
    Err = 1,
    /// The leader gave up (panic, cancellation): elect a new one.
    Abandoned = 2,
    /// The value was too large to share: run the work locally.
    TooLarge = 3,
    /// The value is in the result key (too large to publish inline).
    Ready = 4,
}

impl Status {
    fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Ok,
            1 => Self::Err,
            2 => Self::Abandoned,
            3 => Self::TooLarge,
            4 => Self::Ready,
            _ => return None,
        })
    }
}

/// A parsed envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) codec: u8,
    pub(crate) status: Status,
    pub(crate) generation: u64,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// The signed bytes and their tag, if signed.
    signature: Option<(&'a [u8], &'a [u8])>,
}

/// Why an envelope was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not an envelope of ours (another format or version, truncated), or for another key.
    Foreign,
    /// Ours, but unsigned or not signed with this group's secret.
    Unverified,
}

/// Encodes and checks envelopes for one namespace (and secret, if any).
#[derive(Clone)]
pub(crate) struct Sealer {
    codec: Codec,
    namespace: Vec<u8>,
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("codec", &self.codec)
            .field("signed", &self.mac.is_some())
            .finish()
    }
}

impl Sealer {
    /// `secret` must be valid for HMAC (any length is); `Config::validate` asks for 16+.
    pub(crate) fn new(codec: Codec, namespace: &str, secret: Option<&[u8]>) -> Self {
        Self {
            codec,
            namespace: namespace.as_bytes().to_vec(),
            mac: secret.map(|secret| {
                <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any size")
            }),
        }
    }

    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    fn tag(&self, mac: &Hmac<Sha256>, signed: &[u8]) -> Hmac<Sha256> {
        let mut mac = mac.clone();
        mac.update(&(self.namespace.len() as u64).to_be_bytes());
        mac.update(&self.namespace);
        mac.update(signed);
        mac
    }

    /// The envelope for `key`'s flight `generation`.
    pub(crate) fn seal(
        &self,
        status: Status,
        generation: u64,
        key: &str,
        payload: &[u8],
    ) -> Vec<u8> {
        let key = key.as_bytes();
        let mut out = Vec::with_capacity(FIXED_LEN + key.len() + payload.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.codec.id());
        out.push(status as u8);
        out.push(if self.mac.is_some() { SIGNED } else { 0 });
        out.extend_from_slice(&generation.to_be_bytes());
        // Keys longer than 4 GiB do not reach Redis (512 MiB strings).
        out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(payload);
        if let Some(mac) = &self.mac {
            let tag = self.tag(mac, &out).finalize().into_bytes();
            out.extend_from_slice(&tag);
        }
        out
    }

    /// Parses `bytes` as an envelope for `key`, checking its signature if this group
    /// signs.
    pub(crate) fn open<'a>(&self, bytes: &'a [u8], key: &str) -> Result<Envelope<'a>, Rejected> {
        let envelope = parse(bytes).ok_or(Rejected::Foreign)?;
        if envelope.key != key.as_bytes() {
            return Err(Rejected::Foreign);
        }
        if let Some(mac) = &self.mac {
            let (signed, tag) = envelope.signature.ok_or(Rejected::Unverified)?;
            self.tag(mac, signed)
                .verify_slice(tag)
                .map_err(|_| Rejected::Unverified)?;
        }
        Ok(envelope)
    }
}

fn parse(bytes: &[u8]) -> Option<Envelope<'_>> {
    if bytes.len() < FIXED_LEN || &bytes[..2] != MAGIC || bytes[2] != VERSION {
        return None;
    }
    let flags = bytes[5];
    if flags & !SIGNED != 0 {
        return None;
    }
    let generation = u64::from_be_bytes(bytes[6..14].try_into().ok()?);
    let key_len = usize::try_from(u32::from_be_bytes(bytes[14..18].try_into().ok()?)).ok()?;
    let key_end = FIXED_LEN.checked_add(key_len)?;
    let (body, signature) = if flags & SIGNED == 0 {
        (bytes, None)
    } else {
        let split = bytes.len().checked_sub(TAG_LEN)?;
        let (signed, tag) = bytes.split_at(split);
        (signed, Some((signed, tag)))
    };
    if body.len() < key_end {
        return None;
    }
    Some(Envelope {
        codec: bytes[3],
        status: Status::from_u8(bytes[4])?,
        generation,
        key: &body[FIXED_LEN..key_end],
        payload: &body[key_end..],
        signature,
    })
}

/// Serializes a value with `codec`.
pub(crate) fn encode_value<V: Serialize>(codec: Codec, value: &V) -> Result<Vec<u8>, String> {
    match codec {
        Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        #[cfg(feature = "msgpack")]
        Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
    }
}

/// Deserializes a value written with codec id `codec`; `None` if this build cannot.
pub(crate) fn decode_value<V: DeserializeOwned>(codec: u8, payload: &[u8]) -> Option<V> {
    match codec {
        1 => serde_json::from_slice(payload).ok(),
        #[cfg(feature = "msgpack")]
        2 => rmp_serde::from_slice(payload).ok(),
        _ => None,
    }
}

/// The Redis names of one key's flight. They share the hash tag `{namespace:hash}`, so
/// every script touches one cluster slot.
///
/// Keys belong to one logical database, but pub/sub channels are server-wide: the channel
/// names the database (all but database 0, whose name predates this), so a result
/// published in one database never reaches a waiter in another.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) lock: String,
    pub(crate) generation: String,
    pub(crate) result: String,
    /// The value kept for reuse (`Config::reuse_for`), a hash like the result's.
    pub(crate) reuse: String,
    /// The highest generation a `forget` fenced off: no flight at or below it stores a
    /// value for reuse.
    pub(crate) fence: String,
    pub(crate) channel: String,
    /// The caller's key, checked against every envelope: a result is never taken for
    /// another key's, whatever the names.
    pub(crate) key: String,
    /// The cluster slot of every name above (they share one hash tag).
    pub(crate) slot: u16,
}

impl Keys {
    pub(crate) fn new(namespace: &str, database: i64, key: &str) -> Self {
        let hash = name_hash(namespace, key);
        let base = format!("sf:{{{namespace}:{hash}}}");
        Self {
            lock: format!("{base}:lock"),
            generation: format!("{base}:gen"),
            result: format!("{base}:res"),
            reuse: format!("{base}:reuse"),
            fence: format!("{base}:fence"),
            channel: if database == 0 {
                format!("{base}:done")
            } else {
                format!("{base}:db{database}:done")
            },
            key: key.to_owned(),
            slot: crate::cluster::slot(base.as_bytes()),
        }
    }
}

/// SHA-256 of the length-prefixed namespace and the key, truncated to 128 bits (hex):
/// stable across builds and platforms, and nobody can craft two keys that share names.
fn name_hash(namespace: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update((namespace.len() as u64).to_be_bytes());
    hasher.update(namespace.as_bytes());
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_reject_foreign_bytes() {
        let sealer = Sealer::new(Codec::Json, "ns", None);
        let bytes = sealer.seal(Status::Err, 42, "user:1", b"boom");
        let envelope = sealer.open(&bytes, "user:1").expect("ours");
        assert_eq!(
            (envelope.status, envelope.generation, envelope.payload),
            (Status::Err, 42, &b"boom"[..])
        );
        assert_eq!(sealer.open(&bytes, "user:2"), Err(Rejected::Foreign));
        assert_eq!(sealer.open(b"SF", "user:1"), Err(Rejected::Foreign));
        assert_eq!(sealer.open(&[0; 40], "user:1"), Err(Rejected::Foreign));
        for (at, byte) in [(2, 9), (4, 200), (5, 4)] {
            let mut wrong = bytes.clone();
            wrong[at] = byte;
            assert_eq!(
                sealer.open(&wrong, "user:1"),
                Err(Rejected::Foreign),
                "{at}"
            );
        }
        // A key length beyond the envelope is truncation, not a panic.
        let mut wrong = bytes.clone();
        wrong[14..18].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(sealer.open(&wrong, "user:1"), Err(Rejected::Foreign));
        for len in 0..bytes.len() {
            let _ = sealer.open(&bytes[..len], "user:1");
        }
    }

    #[test]
    fn signed_envelopes_verify_only_with_the_same_secret_and_namespace() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let signer = Sealer::new(Codec::Json, "ns", Some(secret));
        let bytes = signer.seal(Status::Ok, 3, "k", b"1");
        assert_eq!(signer.open(&bytes, "k").expect("signed").payload, b"1");
        let unsigned = Sealer::new(Codec::Json, "ns", None);
        assert!(
            unsigned.open(&bytes, "k").is_ok(),
            "no secret: trusted as is"
        );
        assert_eq!(
            signer.open(&unsigned.seal(Status::Ok, 3, "k", b"1"), "k"),
            Err(Rejected::Unverified)
        );
        let other = Sealer::new(Codec::Json, "ns", Some(b"another secret, long enough"));
        assert_eq!(other.open(&bytes, "k"), Err(Rejected::Unverified));
        let other_ns = Sealer::new(Codec::Json, "ns2", Some(secret));
        assert_eq!(other_ns.open(&bytes, "k"), Err(Rejected::Unverified));
        let mut tampered = bytes.clone();
        let at = tampered.len() - TAG_LEN - 1;
        tampered[at] = b'2';
        assert_eq!(signer.open(&tampered, "k"), Err(Rejected::Unverified));
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("users:v1", 0, "user:{42}");
        let tag = |name: &str| name[name.find('{').unwrap()..=name.find('}').unwrap()].to_owned();
        assert_eq!(tag(&keys.lock), tag(&keys.result));
        assert_eq!(tag(&keys.lock), tag(&keys.generation));
        assert_eq!(tag(&keys.lock), tag(&keys.channel));
        assert!(keys.lock.starts_with("sf:{users:v1:"));
        assert_eq!(tag(&keys.lock).len(), "{users:v1:}".len() + 32, "128 bits");
        assert_ne!(
            Keys::new("users:v1", 0, "a").lock,
            Keys::new("users:v1", 0, "b").lock
        );
        assert_ne!(
            Keys::new("users:v1", 0, "a").lock,
            Keys::new("users:v2", 0, "a").lock
        );
        // Channels are server-wide: each database has its own (database 0 keeps the name
        // it always had), and keys are per database already.
        let (zero, two) = (Keys::new("ns", 0, "k"), Keys::new("ns", 2, "k"));
        assert_eq!(
            zero.channel,
            format!("{}:done", zero.lock.trim_end_matches(":lock"))
        );
        assert_ne!(zero.channel, two.channel);
        assert_ne!(two.channel, Keys::new("ns", 12, "k").channel);
        assert_eq!(tag(&two.channel), tag(&two.lock));
        assert_eq!(
            crate::cluster::slot(two.channel.as_bytes()),
            crate::cluster::slot(two.result.as_bytes())
        );
        assert_eq!(two.slot, crate::cluster::slot(two.lock.as_bytes()));
        assert_eq!((zero.lock, zero.result), (two.lock, two.result));
        // The namespace is length-prefixed: ("a", "bc") and ("ab", "c") differ.
        assert_ne!(name_hash("a", "bc"), name_hash("ab", "c"));
        // SHA-256("\0\0\0\0\0\0\0\x02ns" "k"), first 16 bytes: stable across builds.
        let mut hasher = Sha256::new();
        hasher.update(b"\0\0\0\0\0\0\0\x02nsk");
        let expected: String = hasher.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(name_hash("ns", "k"), expected);
    }

    #[test]
    fn undecodable_values_are_none() {
        assert_eq!(decode_value::<u32>(1, b"\"text\""), None);
        assert_eq!(decode_value::<u32>(99, b"1"), None);
        assert_eq!(decode_value::<u32>(1, b"1"), Some(1));
    }
}
