//! Lab invite tokens (integrations.md §5): HS256 JWTs carrying the invite id.
//!
//! Verification is deliberately lenient about `exp`, because tokens issued by the Python
//! service carry it as a string of epoch *milliseconds*; read correctly, they expire too.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// The only origin this service accepts (project invites are not supported).
pub const LAB_ORIGIN: &str = "Lab";
/// An `exp` above this is in milliseconds.
const MILLISECONDS_THRESHOLD: f64 = 100_000_000_000.0;
/// Leeway after `exp` before a token counts as expired.
const EXPIRY_LEEWAY_SECONDS: f64 = 60.0;

#[derive(Serialize)]
struct IssuedClaims<'a> {
    invite_id: String,
    exp: i64,
    origin: &'a str,
}

/// Why a token was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InviteTokenError {
    /// Bad signature, malformed, another algorithm, or unusable claims.
    #[error("invite token is malformed")]
    Malformed,
    #[error("invite token has expired")]
    Expired,
    /// A valid token for something other than a lab.
    #[error("invite token is not for a lab")]
    NotLab,
}

/// Signs `{"invite_id", "exp": now + days, "origin": "Lab"}` with HS256.
pub fn issue(
    secret: &str,
    invite_id: Uuid,
    now: DateTime<Utc>,
    expires_in_days: u32,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = IssuedClaims {
        invite_id: invite_id.to_string(),
        exp: now.timestamp() + i64::from(expires_in_days) * 86_400,
        origin: LAB_ORIGIN,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Verifies the token and returns its invite id (integrations.md §5, steps 1–5).
pub fn verify(secret: &str, token: &str, now: DateTime<Utc>) -> Result<Uuid, InviteTokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|_| InviteTokenError::Malformed)?
    .claims;

    let invite_id = claims
        .get("invite_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or(InviteTokenError::Malformed)?;
    let origin = claims
        .get("origin")
        .and_then(Value::as_str)
        .ok_or(InviteTokenError::Malformed)?;
    let exp = claims
        .get("exp")
        .and_then(exp_seconds)
        .ok_or(InviteTokenError::Malformed)?;
    if now.timestamp() as f64 > exp + EXPIRY_LEEWAY_SECONDS {
        return Err(InviteTokenError::Expired);
    }
    if origin != LAB_ORIGIN {
        return Err(InviteTokenError::NotLab);
    }
    Ok(invite_id)
}

/// `exp` as Unix seconds: a number or a numeric string; values above 10^11 are milliseconds.
fn exp_seconds(value: &Value) -> Option<f64> {
    let raw = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !raw.is_finite() {
        return None;
    }
    Some(if raw > MILLISECONDS_THRESHOLD {
        raw / 1000.0
    } else {
        raw
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "secret";

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let token = issue(SECRET, id, now, 7).unwrap();
        assert_eq!(verify(SECRET, &token, now), Ok(id));
        let inside_leeway = now + Duration::days(7) + Duration::seconds(59);
        assert_eq!(verify(SECRET, &token, inside_leeway), Ok(id));
        let after = now + Duration::days(7) + Duration::seconds(61);
        assert_eq!(
            verify(SECRET, &token, after),
            Err(InviteTokenError::Expired)
        );
    }

    #[test]
    fn issued_claims_are_exactly_the_documented_ones() {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let token = issue(SECRET, id, now, 2).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            claims,
            json!({"invite_id": id.to_string(), "exp": now.timestamp() + 2 * 86_400, "origin": "Lab"})
        );
    }

    #[test]
    fn legacy_millisecond_string_exp_is_read_as_milliseconds() {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let past_ms = (now - Duration::days(1)).timestamp_millis().to_string();
        let token = sign(
            json!({"invite_id": id.to_string(), "origin": "Lab", "exp": past_ms}),
            SECRET,
        );
        assert_eq!(verify(SECRET, &token, now), Err(InviteTokenError::Expired));
        let future_ms = (now + Duration::days(1)).timestamp_millis();
        let token = sign(
            json!({"invite_id": id.to_string(), "origin": "Lab", "exp": future_ms.to_string()}),
            SECRET,
        );
        assert_eq!(verify(SECRET, &token, now), Ok(id));
        let token = sign(
            json!({"invite_id": id.to_string(), "origin": "Lab", "exp": future_ms}),
            SECRET,
        );
        assert_eq!(verify(SECRET, &token, now), Ok(id));
    }

    #[test]
    fn bad_tokens_are_malformed() {
        let id = Uuid::new_v4().to_string();
        let exp = Utc::now().timestamp() + 3600;
        let cases = [
            sign(
                json!({"invite_id": id, "origin": "Lab", "exp": exp}),
                "other",
            ),
            sign(
                json!({"invite_id": "nope", "origin": "Lab", "exp": exp}),
                SECRET,
            ),
            sign(json!({"invite_id": id, "origin": 5, "exp": exp}), SECRET),
            sign(json!({"invite_id": id, "origin": "Lab"}), SECRET),
            sign(
                json!({"invite_id": id, "origin": "Lab", "exp": "soon"}),
                SECRET,
            ),
            "not.a.token".to_owned(),
        ];
        for token in cases {
            assert_eq!(
                verify(SECRET, &token, Utc::now()),
                Err(InviteTokenError::Malformed),
                "{token}"
            );
        }
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"invite_id": id, "origin": "Lab", "exp": exp}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(SECRET, &hs512, Utc::now()),
            Err(InviteTokenError::Malformed)
        );
    }

    #[test]
    fn another_origin_is_refused_after_the_expiry_check() {
        let id = Uuid::new_v4().to_string();
        let now = Utc::now();
        let token = sign(
            json!({"invite_id": id, "origin": "Project", "exp": now.timestamp() + 60}),
            SECRET,
        );
        assert_eq!(verify(SECRET, &token, now), Err(InviteTokenError::NotLab));
        let expired = sign(
            json!({"invite_id": id, "origin": "Project", "exp": now.timestamp() - 3600}),
            SECRET,
        );
        assert_eq!(
            verify(SECRET, &expired, now),
            Err(InviteTokenError::Expired)
        );
    }
}
