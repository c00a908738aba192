//! A fast keyed hash for the tracing hot path (trace ids in the store, span names in the name
//! table): one multiply-rotate per 8 bytes instead of SipHash's rounds. The key is random per
//! map, so inputs from outside (trace ids sent to the collector, route names from clients)
//! cannot be chosen to collide.

use std::hash::{BuildHasher, Hasher};

/// Builds [`KeyedHasher`]s with one random key.
#[derive(Clone, Copy, Debug)]
pub struct KeyedHash(u64);

impl Default for KeyedHash {
    fn default() -> Self {
        KeyedHash(rand::random::<u64>() | 1)
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

/// The hasher of [`KeyedHash`].
pub struct KeyedHasher(u64);

impl Hasher for KeyedHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_hash_alike_and_keys_differ() {
        let k = KeyedHash::default();
        assert_eq!(k.hash_one("Login/track"), k.hash_one("Login/track"));
        assert_ne!(k.hash_one("Login/track"), k.hash_one("Login/track2"));
        assert_ne!(k.hash_one(7u128), k.hash_one(8u128));
        // Trailing bytes of different lengths do not collide by padding.
        assert_ne!(k.hash_one(&b"ab"[..]), k.hash_one(&b"ab\0"[..]));
    }
}
