//! Session tokens and ids. A token is the session's id (16 random bytes,
//! public: it appears in logs and the admin API) followed by a secret (32
//! bytes from the OS CSPRNG), in base64url. The id finds the session; only
//! the secret's SHA-256 is ever stored, and it is compared in constant time,
//! so neither a look-up's timing nor a copy of the database yields a usable
//! cookie.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a token's secret.
pub type TokenHash = [u8; 32];

const ID_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;
/// Length of a token's base64url text (no padding).
const TOKEN_CHARS: usize = (ID_BYTES + SECRET_BYTES) * 4 / 3;

/// A fresh session id: public (logs, admin API), never a credential.
pub fn new_session_id() -> String {
    to_hex(&random::<ID_BYTES>())
}

/// A fresh token for the session `id`, and the hash to store for it.
/// `None` when `id` is not a session id.
pub fn new_token(id: &str) -> Option<(String, TokenHash)> {
    let id = from_hex::<ID_BYTES>(id)?;
    let secret = random::<SECRET_BYTES>();
    let mut raw = [0u8; ID_BYTES + SECRET_BYTES];
    raw[..ID_BYTES].copy_from_slice(&id);
    raw[ID_BYTES..].copy_from_slice(&secret);
    Some((URL_SAFE_NO_PAD.encode(raw), Sha256::digest(secret).into()))
}

/// The session id (lower-case hex) and secret hash of a well-formed token,
/// or `None` for a malformed one.
pub fn parse(token: &str) -> Option<(HexId, TokenHash)> {
    if token.len() != TOKEN_CHARS {
        return None;
    }
    let mut raw = [0u8; ID_BYTES + SECRET_BYTES];
    let decoded = URL_SAFE_NO_PAD.decode_slice(token, &mut raw).ok()?;
    if decoded != raw.len() {
        return None;
    }
    let mut id = HexId([0; ID_BYTES * 2]);
    write_hex(&raw[..ID_BYTES], &mut id.0);
    Some((id, Sha256::digest(&raw[ID_BYTES..]).into()))
}

/// A session id in hex, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexId([u8; ID_BYTES * 2]);

impl HexId {
    pub fn as_str(&self) -> &str {
        // Only ever filled with hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Random bytes for passwords nobody will type (the decoy hash).
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>())
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Constant-time equality of two token hashes.
pub fn same_hash(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

/// Lower-case hex of some bytes (ids, token hashes).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// The `N` bytes spelled by `text` in hex, if it is exactly that.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if text.len() != N * 2 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_session_id_and_a_random_secret() {
        let id = new_session_id();
        assert_eq!(id.len(), 32);
        let (a, hash_a) = new_token(&id).unwrap();
        let (b, hash_b) = new_token(&id).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        let (parsed_id, parsed_hash) = parse(&a).unwrap();
        assert_eq!(parsed_id.as_str(), id);
        assert!(same_hash(&parsed_hash, &hash_a));
        assert!(!same_hash(&parsed_hash, &hash_b));
        assert_eq!(from_hex::<32>(&to_hex(&hash_a)), Some(hash_a));
        assert!(new_token("not an id").is_none());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let (token, _) = new_token(&new_session_id()).unwrap();
        assert!(parse("short").is_none());
        assert!(parse(&"!".repeat(TOKEN_CHARS)).is_none());
        assert!(parse(&format!("{token}=")).is_none());
        assert!(parse(&token[1..]).is_none());
    }
}
