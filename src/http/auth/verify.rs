//! The local checks of a caller's token (integrations.md §2.1–§2.2): the `Authorization`
//! header, the JWT header, the signature and time claims, and the identity claims.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Refusal;
use crate::domain::roles::parse_uuid;

/// Clock-skew allowance for `exp` and `nbf`.
pub(crate) const LEEWAY_SECONDS: u64 = 60;

/// The token of `Authorization: Bearer <token>`; the scheme is matched case-insensitively.
pub(crate) fn bearer_token(authorization: Option<&str>) -> Result<&str, Refusal> {
    let value = authorization.map(str::trim).unwrap_or_default();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Refusal::NoToken);
    }
    Ok(token)
}

/// Decodes the JWT header, rejects any algorithm but RS256, and returns the `kid`.
pub(crate) fn rs256_kid(token: &str) -> Result<Option<String>, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|err| {
        tracing::debug!(reason = %err, "token rejected: unreadable header");
        Refusal::Malformed
    })?;
    if header.alg != Algorithm::RS256 {
        tracing::debug!(alg = ?header.alg, "token rejected: algorithm is not RS256");
        return Err(Refusal::WrongAlgorithm);
    }
    Ok(header.kid)
}

/// The `jsonwebtoken` rules: RS256 only, `exp` required, `nbf` checked when present, 60 s
/// leeway, no audience check, and `iss` when an issuer is expected.
pub(crate) fn validation(expected_issuer: Option<&str>) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
    if let Some(issuer) = expected_issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    validation
}

/// The identity claims of a verified token (integrations.md §2.2).
#[derive(Debug)]
pub(crate) struct Identity {
    pub sub: Uuid,
    pub email: String,
    pub preferred_username: String,
    pub name: Option<String>,
    pub sid: Option<String>,
}

/// Verifies the signature and the time and issuer claims, then reads the identity claims.
pub(crate) fn verify(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    expected_issuer: Option<&str>,
) -> Result<Identity, Refusal> {
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(|err| {
            tracing::debug!(reason = %err, "token rejected");
            refusal_of(err.kind())
        })?;
    let claims = data.claims;
    // jsonwebtoken also accepts an `iss` array that contains the issuer; the spec wants equality.
    if let Some(expected) = expected_issuer
        && claims.get("iss").and_then(Value::as_str) != Some(expected)
    {
        tracing::debug!("token rejected: issuer mismatch");
        return Err(Refusal::WrongIssuer);
    }
    identity(&claims)
}

/// The refusal behind a `jsonwebtoken` validation error.
fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        // Only `exp` and (when an issuer is expected) `iss` are required.
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Refusal::WrongIssuer,
        ErrorKind::MissingRequiredClaim(_) => Refusal::NoExpiry,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::WrongAlgorithm,
        _ => Refusal::Malformed,
    }
}

fn identity(claims: &Map<String, Value>) -> Result<Identity, Refusal> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(parse_uuid)
        .ok_or(Refusal::MissingClaim("sub"))?;
    let email = non_empty(claims, "email").ok_or(Refusal::MissingClaim("email"))?;
    let preferred_username = non_empty(claims, "preferred_username")
        .ok_or(Refusal::MissingClaim("preferred_username"))?;
    Ok(Identity {
        sub,
        email,
        preferred_username,
        name: non_empty(claims, "name"),
        sid: non_empty(claims, "sid"),
    })
}

fn non_empty(claims: &Map<String, Value>, claim: &str) -> Option<String> {
    claims
        .get(claim)
        .and_then(Value::as_str)
        .filter(|value| !value.trim().is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER  abc ")), Ok("abc"));
        for bad in [
            None,
            Some(""),
            Some("   "),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer    "),
            Some("Basic x"),
            Some("Bearerabc"),
            Some("abc"),
        ] {
            assert_eq!(bearer_token(bad), Err(Refusal::NoToken), "{bad:?}");
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn identity_claims_are_read_and_checked_in_order() {
        let sub = "A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D";
        let full = json!({"sub": sub, "email": "a@b.c", "preferred_username": "ab", "name": "", "sid": "s"});
        let id = identity(&claims(full)).unwrap();
        assert_eq!(id.sub, Uuid::parse_str(sub).unwrap());
        assert_eq!(id.name, None);
        assert_eq!(id.sid.as_deref(), Some("s"));

        for (value, missing) in [
            (json!({"email": "", "preferred_username": ""}), "sub"),
            (
                json!({"sub": 5, "email": "a@b.c", "preferred_username": "ab"}),
                "sub",
            ),
            (
                json!({"sub": sub.replace('-', ""), "email": "a@b.c", "preferred_username": "ab"}),
                "sub",
            ),
            (
                json!({"sub": sub, "email": " ", "preferred_username": "ab"}),
                "email",
            ),
            (
                json!({"sub": sub, "email": null, "preferred_username": "ab"}),
                "email",
            ),
            (
                json!({"sub": sub, "email": "a@b.c", "preferred_username": ["ab"]}),
                "preferred_username",
            ),
        ] {
            assert_eq!(
                identity(&claims(value)).unwrap_err(),
                Refusal::MissingClaim(missing)
            );
        }
    }

    #[test]
    fn the_issuer_is_required_only_when_expected() {
        assert!(!validation(None).required_spec_claims.contains("iss"));
        let with = validation(Some("https://kc/realms/r"));
        assert!(with.required_spec_claims.contains("iss"));
        assert!(with.validate_nbf && with.validate_exp && !with.validate_aud);
        assert_eq!(with.algorithms, vec![Algorithm::RS256]);
        assert_eq!(with.leeway, 60);
    }
}
