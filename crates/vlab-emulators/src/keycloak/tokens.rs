//! RSA keys, JWKS entries, signing and verification of the emulator's JWTs.

use anyhow::{Context as _, anyhow, bail};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde_json::{Value, json};

/// One RSA key pair of the realm.
#[derive(Clone)]
pub(crate) struct RsaKey {
    pub kid: String,
    /// PKCS#8 `PrivateKeyInfo`, DER; what the state file stores.
    pub pkcs8: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaKey {
    /// A fresh 2048-bit key with a random Keycloak-looking kid.
    pub fn generate() -> anyhow::Result<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow!("generating an RSA key failed"))?;
        let der = pair
            .as_der()
            .map_err(|_| anyhow!("encoding the RSA key as PKCS#8 failed"))?;
        let mut kid = [0u8; 32];
        rand::rng().fill_bytes(&mut kid);
        Self::from_pkcs8(URL_SAFE_NO_PAD.encode(kid), der.as_ref().to_vec())
    }

    pub fn from_pkcs8(kid: String, pkcs8: Vec<u8>) -> anyhow::Result<Self> {
        let pair =
            KeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow!("not an RSA PKCS#8 key: {e}"))?;
        let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        // jsonwebtoken's aws-lc backend signs with a PKCS#1 `RSAPrivateKey`, which is the
        // `privateKey` OCTET STRING inside the PKCS#8 structure.
        let pkcs1 = pkcs1_from_pkcs8(&pkcs8).context("reading the PKCS#8 key")?;
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_der(pkcs1),
            decoding: DecodingKey::from_rsa_raw_components(&public.n, &public.e),
            n: public.n,
            e: public.e,
            pkcs8,
        })
    }

    pub fn pkcs8_base64(&self) -> String {
        STANDARD.encode(&self.pkcs8)
    }

    pub fn from_stored(kid: String, pkcs8_base64: &str) -> anyhow::Result<Self> {
        let der = STANDARD
            .decode(pkcs8_base64)
            .context("the stored key is not base64")?;
        Self::from_pkcs8(kid, der)
    }

    /// The JWKS entry of a signing key.
    pub fn signing_jwk(&self) -> Value {
        json!({
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// The JWKS entry of the realm's encryption key, which verifiers must skip.
    pub fn encryption_jwk(&self) -> Value {
        json!({
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RSA-OAEP",
            "use": "enc",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// Signs `claims` as an RS256 JWT carrying this key's kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        // Signing with a key that parsed at load time can only fail on an allocation failure.
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .unwrap_or_else(|e| panic!("signing with a validated RSA key failed: {e}"))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("Token is not active")]
    Invalid,
    #[error("Token verification failed: unknown key")]
    UnknownKey,
}

/// Verifies an RS256 token against `keys` (signature, `exp` with no leeway, `nbf`, `iss`).
pub(crate) fn verify(keys: &[RsaKey], token: &str, issuer: &str) -> Result<Value, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenError::Invalid);
    }
    let candidates: Vec<&RsaKey> = match &header.kid {
        Some(kid) => keys.iter().filter(|k| &k.kid == kid).collect(),
        None => keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    for key in candidates {
        if let Ok(data) = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation) {
            return Ok(data.claims);
        }
    }
    Err(TokenError::Invalid)
}

/// A random id in Keycloak's style (a UUID), for `jti` and `sid`.
pub(crate) fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Extracts the `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`
/// (`SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`).
fn pkcs1_from_pkcs8(der: &[u8]) -> anyhow::Result<&[u8]> {
    let (info, _) = read_tlv(der, 0x30)?;
    let (_, rest) = read_tlv(info, 0x02)?;
    let (_, rest) = read_tlv(rest, 0x30)?;
    let (key, _) = read_tlv(rest, 0x04)?;
    Ok(key)
}

/// Reads one DER element with the expected tag; returns its contents and what follows it.
fn read_tlv(input: &[u8], tag: u8) -> anyhow::Result<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first().context("truncated DER")?;
    if found != tag {
        bail!("expected DER tag {tag:#04x}, found {found:#04x}");
    }
    let (&first, mut rest) = rest.split_first().context("truncated DER length")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            bail!("unsupported DER length");
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        bail!("truncated DER contents");
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_tokens_it_verifies() {
        let key = RsaKey::generate().unwrap();
        let other = RsaKey::generate().unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = key.sign(&json!({"iss": "i", "sub": "s", "exp": now + 60}));
        let claims = verify(std::slice::from_ref(&key), &token, "i").unwrap();
        assert_eq!(claims["sub"], "s");
        assert!(matches!(
            verify(std::slice::from_ref(&other), &token, "i"),
            Err(TokenError::UnknownKey)
        ));
        assert!(verify(std::slice::from_ref(&key), &token, "other-issuer").is_err());
        let expired = key.sign(&json!({"iss": "i", "sub": "s", "exp": now - 1}));
        assert!(verify(std::slice::from_ref(&key), &expired, "i").is_err());
    }

    #[test]
    fn a_stored_key_round_trips() {
        let key = RsaKey::generate().unwrap();
        let back = RsaKey::from_stored(key.kid.clone(), &key.pkcs8_base64()).unwrap();
        assert_eq!(back.signing_jwk(), key.signing_jwk());
        assert_eq!(key.signing_jwk()["e"], "AQAB");
    }

    #[test]
    fn der_lengths_in_long_form_are_read() {
        let mut der = vec![0x04, 0x82, 0x01, 0x00];
        der.extend(std::iter::repeat_n(7u8, 256));
        let (contents, rest) = read_tlv(&der, 0x04).unwrap();
        assert_eq!(contents.len(), 256);
        assert!(rest.is_empty());
        assert!(read_tlv(&der[..100], 0x04).is_err());
    }
}
