//! Key names and the versioned envelope that carries a result between processes.
//!
//! Layout (big-endian): `b"SF"`, version `1`, codec id, status, generation (u64), key
//! fingerprint (u64), then the payload: the encoded value (`Ok`), the error's text (`Err`),
//! or nothing. The fixed header lets a follower classify a message without decoding it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Codec;

const MAGIC: &[u8; 2] = b"SF";
const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 21;

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

/// A parsed envelope header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) codec: u8,
    pub(crate) status: Status,
    pub(crate) generation: u64,
    pub(crate) fingerprint: u64,
}

impl Header {
    /// Splits `bytes` into header and payload; `None` if they are no envelope of ours.
    pub(crate) fn parse(bytes: &[u8]) -> Option<(Self, &[u8])> {
        if bytes.len() < HEADER_LEN || &bytes[..2] != MAGIC || bytes[2] != VERSION {
            return None;
        }
        let header = Self {
            codec: bytes[3],
            status: Status::from_u8(bytes[4])?,
            generation: u64::from_be_bytes(bytes[5..13].try_into().ok()?),
            fingerprint: u64::from_be_bytes(bytes[13..21].try_into().ok()?),
        };
        Some((header, &bytes[HEADER_LEN..]))
    }

    /// The envelope with this header and `payload`.
    pub(crate) fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.codec);
        out.push(self.status as u8);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
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
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) lock: String,
    pub(crate) generation: String,
    pub(crate) result: String,
    pub(crate) channel: String,
    /// A second, independent hash of the key, checked on every envelope: a hash collision
    /// of the key names is treated as a miss, never as someone else's value.
    pub(crate) fingerprint: u64,
}

impl Keys {
    pub(crate) fn new(namespace: &str, key: &str) -> Self {
        let hash = fnv1a_128(key.as_bytes());
        let base = format!("sf:{{{namespace}:{hash:032x}}}");
        Self {
            lock: format!("{base}:lock"),
            generation: format!("{base}:gen"),
            result: format!("{base}:res"),
            channel: format!("{base}:done"),
            fingerprint: fingerprint(key.as_bytes()),
        }
    }
}

/// FNV-1a, 128 bits: stable across builds and platforms, unlike std's hashers.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// A 64-bit hash unrelated to [`fnv1a_128`] (djb2 over the bytes and the length).
fn fingerprint(bytes: &[u8]) -> u64 {
    let h = bytes
        .iter()
        .fold(5381u64, |h, &b| h.wrapping_mul(33) ^ u64::from(b));
    h ^ (bytes.len() as u64).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_foreign_bytes() {
        let header = Header {
            codec: 1,
            status: Status::Err,
            generation: 42,
            fingerprint: 7,
        };
        let bytes = header.encode(b"boom");
        assert_eq!(Header::parse(&bytes), Some((header, &b"boom"[..])));
        assert_eq!(Header::parse(b"SF"), None);
        assert_eq!(Header::parse(&[0; 40]), None);
        let mut wrong_version = bytes.clone();
        wrong_version[2] = 9;
        assert_eq!(Header::parse(&wrong_version), None);
        let mut wrong_status = bytes;
        wrong_status[4] = 200;
        assert_eq!(Header::parse(&wrong_status), None);
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("users:v1", "user:{42}");
        let tag = |name: &str| name[name.find('{').unwrap()..=name.find('}').unwrap()].to_owned();
        assert_eq!(tag(&keys.lock), tag(&keys.result));
        assert_eq!(tag(&keys.lock), tag(&keys.generation));
        assert_eq!(tag(&keys.lock), tag(&keys.channel));
        assert!(keys.lock.starts_with("sf:{users:v1:"));
        assert_ne!(
            Keys::new("users:v1", "a").lock,
            Keys::new("users:v1", "b").lock
        );
        assert_ne!(
            Keys::new("users:v1", "a").lock,
            Keys::new("users:v2", "a").lock
        );
    }

    #[test]
    fn undecodable_values_are_none() {
        assert_eq!(decode_value::<u32>(1, b"\"text\""), None);
        assert_eq!(decode_value::<u32>(99, b"1"), None);
        assert_eq!(decode_value::<u32>(1, b"1"), Some(1));
    }
}
