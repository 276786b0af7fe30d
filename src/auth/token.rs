//! Session tokens and ids. A token is 256 bits from the OS CSPRNG; only its
//! SHA-256 is ever stored, and hashes are compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

const TOKEN_BYTES: usize = 32;
/// Length of a token's base64url text (no padding).
const TOKEN_CHARS: usize = 43;

/// A fresh token for a cookie.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh session id: public (logs, admin API), never a credential.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    to_hex(&bytes)
}

/// The hash of a well-formed token, or `None` for a malformed one.
pub fn hash_token(token: &str) -> Option<TokenHash> {
    let well_formed = token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| Sha256::digest(token.as_bytes()).into())
}

/// Constant-time equality of two token hashes.
pub fn same_hash(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

/// Lower-case hex of some bytes (ids, token hashes).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub fn from_hex(text: &str) -> Option<TokenHash> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
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
    fn tokens_are_long_random_and_hash_round_trips() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        let hash = hash_token(&a).unwrap();
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert!(same_hash(&hash, &hash_token(&a).unwrap()));
        assert!(!same_hash(&hash, &hash_token(&b).unwrap()));
        assert_eq!(new_session_id().len(), 32);
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        assert!(hash_token("short").is_none());
        assert!(hash_token(&"!".repeat(TOKEN_CHARS)).is_none());
        assert!(hash_token(&format!("{}=", new_token())).is_none());
    }
}
