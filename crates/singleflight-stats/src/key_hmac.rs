//! Keyed hashes of keys, for the rare export that must name a key.

use alloc::string::String;
use core::fmt;
use core::fmt::Write as _;
use core::hash::Hasher;

use hmac::{Hmac, Mac};
use sha2::Sha256;
#[cfg(feature = "tracing")]
use singleflight_core::ObservedKey;

/// Turns keys into keyed hashes (HMAC-SHA256 under a secret the application supplies), so
/// that a key can be told apart from others in an export without revealing it.
///
/// A plain hash is not enough: keys are often user ids or email addresses, which anyone
/// can hash one by one until a hash matches. Without the secret, a keyed hash cannot be
/// recomputed, so it can be neither reversed by enumeration nor matched across services
/// that use different secrets. Keep the secret out of the exported data, and change it to
/// unlink old exports from new ones.
///
/// Nothing in this crate exports keys unless handed one of these.
///
/// # Examples
///
/// ```
/// use singleflight_stats::KeyHmac;
///
/// let keys = KeyHmac::new(b"an application secret, from its configuration");
/// let label = keys.label(b"user:42");
/// assert_eq!(label.len(), 32); // 128 bits, in hex
/// assert_eq!(label, keys.label(b"user:42"));
/// assert_ne!(label, KeyHmac::new(b"another secret").label(b"user:42"));
/// ```
#[derive(Clone)]
pub struct KeyHmac {
    mac: Hmac<Sha256>,
}

impl KeyHmac {
    /// Creates the hasher for `secret` (any length; at least 32 random bytes is best).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .expect("HMAC takes a secret of any length"),
        }
    }

    /// The full HMAC-SHA256 of `key`.
    pub fn digest(&self, key: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key);
        mac.finalize().into_bytes().into()
    }

    /// The first 128 bits of [`digest`](Self::digest), in lowercase hex: short enough for
    /// an attribute, long enough never to collide between the keys of one application.
    pub fn label(&self, key: &[u8]) -> String {
        let mut mac = Feed(self.mac.clone());
        mac.0.update(key);
        mac.label()
    }

    /// The [`label`](Self::label) of a key a group offered its observers, fed to the MAC
    /// as it is written, with no copy: `"<group>/<key>"` (the key alone for a group with
    /// no name) if the group formats its keys, the very bytes a [`HotKeys`](crate::HotKeys)
    /// fed by that group holds, so a short key's label is the one
    /// [`OtelObserver::observe_hot_keys`](crate::OtelObserver::observe_hot_keys) exports
    /// for it; otherwise the key's `Hash` stream after the group's name and a `0xff`.
    #[cfg(feature = "tracing")]
    pub(crate) fn label_observed(&self, group: Option<&str>, key: &dyn ObservedKey) -> String {
        let mut formatted = Feed(self.mac.clone());
        if let Some(group) = group {
            formatted.0.update(group.as_bytes());
            formatted.0.update(b"/");
        }
        if let Some(Ok(())) = key.write_key(&mut formatted) {
            return formatted.label();
        }
        // No format (or one that failed, midway perhaps): start over from the hash.
        let mut hashed = Feed(self.mac.clone());
        hashed.0.update(group.unwrap_or("").as_bytes());
        hashed.0.update(&[0xff]);
        key.hash_with(&mut hashed);
        hashed.label()
    }
}

/// A MAC in progress, fed by a formatter or a hasher.
struct Feed(Hmac<Sha256>);

impl Feed {
    /// The first 128 bits of the MAC, in lowercase hex.
    fn label(self) -> String {
        let digest: [u8; 32] = self.0.finalize().into_bytes().into();
        let mut label = String::with_capacity(32);
        for byte in &digest[..16] {
            let _ = write!(label, "{byte:02x}");
        }
        label
    }
}

impl fmt::Write for Feed {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

impl Hasher for Feed {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Unused: the MAC is read with `label`.
    fn finish(&self) -> u64 {
        0
    }
}

impl fmt::Debug for KeyHmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret (nor anything derived from it).
        f.debug_struct("KeyHmac").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::KeyHmac;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        let keys = KeyHmac::new(b"Jefe");
        let digest = keys.digest(b"what do ya want for nothing?");
        let hex: std::string::String = digest.iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(keys.label(b"what do ya want for nothing?"), hex[..32]);
    }

    #[test]
    fn debug_shows_no_secret() {
        let debug = std::format!("{:?}", KeyHmac::new(b"hunter2"));
        assert!(!debug.contains("hunter2"));
    }
}
