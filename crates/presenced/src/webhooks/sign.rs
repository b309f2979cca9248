//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`,
//! keyed with the secret's bytes (the base64 after `whsec_`).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Fewest and most bytes a secret may have (the Standard Webhooks bounds).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A configured `whsec_…` secret's key bytes, or what is wrong with it (never the secret).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return Err("must be whsec_ followed by base64 (Standard Webhooks)".into());
    };
    // Padding or none, both are seen in the wild.
    let key = STANDARD_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| "is not base64 after whsec_".to_string())?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; a secret has {} to {} (openssl rand -base64 32 makes one)",
            key.len(),
            SECRET_BYTES.start(),
            SECRET_BYTES.end()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header of one delivery attempt.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification (and of Svix's libraries).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Any byte changed changes the signature.
        assert_ne!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265331,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_repeating_them() {
        for (bad, why) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
            ("whsec_not base64!", "base64"),
            ("whsec_c2hvcnQ=", "bytes"),
            ("whsec_", "bytes"),
        ] {
            let problem = decode_secret(bad).unwrap_err();
            assert!(problem.contains(why), "{bad}: {problem}");
            let b64 = bad.trim_start_matches("whsec_");
            assert!(b64.is_empty() || !problem.contains(b64), "{problem}");
        }
        assert_eq!(
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
        // With padding too.
        assert_eq!(
            decode_secret(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap(),
            [7u8; 32]
        );
    }
}
