//! The trigger `signature` check (DESIGN §4): HMAC-SHA256 over the raw body, GitHub style
//! (`sha256=<hex>`), compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::trigger::SignatureSpec;

/// True when `presented` (the signature header's value) is the prefix followed by the hex
/// HMAC-SHA256 of `body` under the trigger's secret.
pub fn verify(spec: &SignatureSpec, presented: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_mac) = presented.and_then(|v| v.trim().strip_prefix(spec.prefix.as_str())) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(spec.secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trigger::SignatureAlgorithm;

    fn spec(prefix: &str) -> SignatureSpec {
        SignatureSpec {
            algorithm: SignatureAlgorithm::HmacSha256,
            header: "X-Hub-Signature-256".into(),
            secret: "It's a Secret to Everybody".into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn githubs_documented_example_verifies() {
        // From GitHub's webhook documentation: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify(&spec("sha256="), Some(header), b"Hello, World!"));
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_fail() {
        let s = spec("sha256=");
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(!verify(&s, Some(good), b"Hello, World?"));
        assert!(!verify(&s, None, b"Hello, World!"));
        assert!(!verify(&s, Some("sha256=zz"), b"Hello, World!"));
        assert!(!verify(&s, Some(&good[7..]), b"Hello, World!"));
        assert!(!verify(&s, Some("sha256="), b"Hello, World!"));
    }
}
