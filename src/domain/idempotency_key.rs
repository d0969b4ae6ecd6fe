//! The `Idempotency-Key` request header: a client-chosen token that makes a repeated assign or
//! roster import return the first request's answer instead of running again.

/// The header's name, as clients send it and as a 422 names it.
pub const HEADER: &str = "Idempotency-Key";
/// The longest key accepted (a UUID is 36; room for a client prefix).
pub const MAX_LEN: usize = 255;
/// The 422 message of a key that is not acceptable.
pub const INVALID: &str =
    "Must be 1 to 255 visible ASCII characters (letters, digits and punctuation, no spaces)";

/// A validated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accepts the bare token, or the quoted form of the IETF draft (`"8e03…"`), whose quotes
    /// are not part of the key. Characters are visible ASCII except `"` and `\`, so a key is
    /// safe in logs and never needs escaping.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let key = raw
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(raw);
        let allowed = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
        if key.is_empty() || key.len() > MAX_LEN || !key.chars().all(allowed) {
            return Err(INVALID);
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_tokens_and_quoted_keys_are_accepted() {
        for (raw, key) in [
            (
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            ("\"import:2026-09-01/1\"", "import:2026-09-01/1"),
            ("a", "a"),
        ] {
            assert_eq!(IdempotencyKey::parse(raw).unwrap().as_str(), key);
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn empty_long_spaced_and_non_ascii_keys_are_refused() {
        for raw in [
            "",
            "\"\"",
            "two words",
            "tab\there",
            "clé",
            "back\\slash",
            "in\"side",
            &"k".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(IdempotencyKey::parse(raw), Err(INVALID), "{raw:?}");
        }
    }
}
