//! The realm's signing keys (integrations.md §2.1), fetched from the JWKS endpoint and cached.
//!
//! * The key set is cached for [`KEYS_TTL`]. When a refresh fails, the old set stays in use and
//!   the refresh is tried again after [`RETRY_AFTER_FAILURE`].
//! * An unknown `kid` triggers one refetch, at most once per [`UNKNOWN_KID_COOLDOWN`] for the
//!   whole process, so a flood of bogus `kid`s cannot hammer Keycloak.
//! * Fetches are single-flight: one at a time, and whoever waited for a fetch uses its result
//!   instead of fetching again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::{Failure, Refusal};
use crate::clients::http::{self, Call, Outbound, RetryPolicy, Service};

pub(crate) const KEYS_TTL: Duration = Duration::from_secs(3600);
pub(crate) const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

const CALL: Call = Call {
    service: Service::Keycloak,
    operation: "kc_jwks",
    retry: RetryPolicy::Idempotent,
};

/// The usable keys of one JWKS answer.
struct KeySet {
    keys: Vec<(Option<String>, Arc<DecodingKey>)>,
}

enum Selection {
    Found(Arc<DecodingKey>),
    /// A `kid` that is not in the set.
    UnknownKid,
    /// No `kid`, and not exactly one usable key.
    Ambiguous,
}

impl KeySet {
    fn select(&self, kid: Option<&str>) -> Selection {
        let found = match kid {
            Some(kid) => self.keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => return Selection::Ambiguous,
        };
        match found {
            Some((_, key)) => Selection::Found(Arc::clone(key)),
            None => Selection::UnknownKid,
        }
    }

    /// Keeps RSA keys whose `use` is `sig` or absent and whose `alg` is RS256 or absent.
    fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Jwk {
            kid: Option<String>,
            kty: Option<String>,
            #[serde(rename = "use")]
            key_use: Option<String>,
            alg: Option<String>,
            n: Option<String>,
            e: Option<String>,
        }
        let document: Document = serde_json::from_str(body)?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter(|jwk| {
                jwk.kty.as_deref() == Some("RSA")
                    && matches!(jwk.key_use.as_deref(), None | Some("sig"))
                    && matches!(jwk.alg.as_deref(), None | Some("RS256"))
            })
            .filter_map(|jwk| {
                let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?);
                Some((jwk.kid, Arc::new(key.ok()?)))
            })
            .collect();
        Ok(Self { keys })
    }
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// When the cached set should be fetched again.
    refresh_at: Option<Instant>,
    /// Counts failed fetches.
    failures: u64,
    last_unknown_kid_fetch: Option<Instant>,
}

impl State {
    /// The cached set, unless it is missing or due for a refresh.
    fn usable(&self) -> Option<Arc<KeySet>> {
        let due = self.refresh_at.is_none_or(|at| Instant::now() >= at);
        if due { None } else { self.keys.clone() }
    }
}

pub(crate) struct Jwks {
    url: String,
    outbound: Outbound,
    state: Mutex<State>,
    /// Held while a fetch is in flight.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub(crate) fn new(url: String, outbound: Outbound) -> Self {
        Self {
            url,
            outbound,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches the key set now (start-up warm-up).
    pub(crate) async fn warm_up(&self) -> Result<(), Failure> {
        self.current().await.map(|_| ())
    }

    /// The key for a token whose header carries `kid`.
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, Failure> {
        let (keys, fetched_now) = self.current().await?;
        match keys.select(kid) {
            Selection::Found(key) => return Ok(key),
            Selection::Ambiguous => {
                tracing::debug!(
                    usable_keys = keys.keys.len(),
                    "token rejected: no kid and not exactly one usable key"
                );
                return Err(Refusal::UnknownKeyId.into());
            }
            Selection::UnknownKid if fetched_now => {}
            Selection::UnknownKid => {
                if let Some(keys) = self.refetch_for_unknown_kid(&keys).await
                    && let Selection::Found(key) = keys.select(kid)
                {
                    return Ok(key);
                }
            }
        }
        tracing::debug!(kid = ?kid, "token rejected: unknown kid");
        Err(Refusal::UnknownKeyId.into())
    }

    /// The cached set, fetching it when missing or due. Returns whether it was fetched by this
    /// call. A failed refresh falls back to the previous set; without one it is a 502.
    async fn current(&self) -> Result<(Arc<KeySet>, bool), Failure> {
        let failures_seen = {
            let state = self.lock();
            if let Some(keys) = state.usable() {
                return Ok((keys, false));
            }
            state.failures
        };
        let _fetching = self.fetching.lock().await;
        {
            let state = self.lock();
            if let Some(keys) = state.usable() {
                return Ok((keys, false));
            }
            if state.failures != failures_seen {
                // The fetch we waited for failed; share its outcome instead of queueing another.
                return state
                    .keys
                    .clone()
                    .map(|keys| (keys, false))
                    .ok_or(Failure::Unavailable);
            }
        }
        match self.fetch().await {
            Some(keys) => Ok((keys, true)),
            None => {
                let keys = self.lock().keys.clone();
                match keys {
                    Some(keys) => {
                        tracing::warn!("using the previously fetched signing keys");
                        Ok((keys, false))
                    }
                    None => Err(Failure::Unavailable),
                }
            }
        }
    }

    /// One refetch for an unknown `kid`, unless one happened in the last 30 s. Returns the set
    /// to look in again, if there is a newer one.
    async fn refetch_for_unknown_kid(&self, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let _fetching = self.fetching.lock().await;
        {
            let mut state = self.lock();
            if let Some(keys) = &state.keys
                && !Arc::ptr_eq(keys, seen)
            {
                // Another request refetched while this one waited.
                return Some(Arc::clone(keys));
            }
            if state
                .last_unknown_kid_fetch
                .is_some_and(|at| at.elapsed() < UNKNOWN_KID_COOLDOWN)
            {
                return None;
            }
            state.last_unknown_kid_fetch = Some(Instant::now());
        }
        self.fetch().await
    }

    /// Fetches and stores the key set. The caller holds `fetching`.
    async fn fetch(&self) -> Option<Arc<KeySet>> {
        match self.download().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if keys.keys.is_empty() {
                    tracing::warn!("the JWKS has no usable RS256 signing key");
                }
                let mut state = self.lock();
                state.keys = Some(Arc::clone(&keys));
                state.refresh_at = Some(Instant::now() + KEYS_TTL);
                Some(keys)
            }
            Err(reason) => {
                tracing::warn!(operation = CALL.operation, %reason, "could not fetch the signing keys");
                let mut state = self.lock();
                state.failures = state.failures.wrapping_add(1);
                if state.keys.is_some() {
                    state.refresh_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                }
                None
            }
        }
    }

    async fn download(&self) -> Result<KeySet, String> {
        let response = self
            .outbound
            .send(CALL, |client| client.get(&self.url))
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("unexpected status {}", status.as_u16()));
        }
        let body = http::read_text(CALL, response)
            .await
            .map_err(|err| err.to_string())?;
        KeySet::from_body(&body).map_err(|err| {
            http::record_decode_error(CALL);
            format!("unreadable JWKS: {err}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const E: &str = "AQAB";

    fn key(extra: serde_json::Value) -> serde_json::Value {
        let mut key = serde_json::json!({"kty": "RSA", "n": N, "e": E});
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    fn kids(body: serde_json::Value) -> Vec<Option<String>> {
        KeySet::from_body(&body.to_string())
            .unwrap()
            .keys
            .into_iter()
            .map(|(kid, _)| kid)
            .collect()
    }

    #[test]
    fn only_rs256_signing_keys_are_kept() {
        let body = serde_json::json!({"keys": [
            key(serde_json::json!({"kid": "sig", "use": "sig", "alg": "RS256"})),
            key(serde_json::json!({"kid": "bare"})),
            key(serde_json::json!({"kid": "enc", "use": "enc", "alg": "RSA-OAEP"})),
            key(serde_json::json!({"kid": "enc2", "use": "enc"})),
            key(serde_json::json!({"kid": "rs384", "alg": "RS384"})),
            {"kid": "ec", "kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
            {"kid": "no-n", "kty": "RSA", "e": E},
            {"kid": 7, "kty": "RSA", "n": N, "e": E},
            key(serde_json::json!({"kid": "bad-n", "n": "!!!"})),
            "not an object",
        ]});
        assert_eq!(
            kids(body),
            vec![Some("sig".to_owned()), Some("bare".to_owned())]
        );
    }

    #[test]
    fn a_document_without_keys_is_unreadable() {
        assert!(KeySet::from_body("{}").is_err());
        assert!(KeySet::from_body("<html>").is_err());
        assert!(kids(serde_json::json!({"keys": []})).is_empty());
    }

    #[test]
    fn a_kidless_token_needs_exactly_one_key() {
        let one = KeySet::from_body(
            &serde_json::json!({"keys": [key(serde_json::json!({"kid": "a"}))]}).to_string(),
        )
        .unwrap();
        assert!(matches!(one.select(None), Selection::Found(_)));
        assert!(matches!(one.select(Some("a")), Selection::Found(_)));
        assert!(matches!(one.select(Some("b")), Selection::UnknownKid));
        let two = KeySet::from_body(
            &serde_json::json!({"keys": [key(serde_json::json!({"kid": "a"})), key(serde_json::json!({"kid": "b"}))]})
                .to_string(),
        )
        .unwrap();
        assert!(matches!(two.select(None), Selection::Ambiguous));
        let none = KeySet::from_body(r#"{"keys": []}"#).unwrap();
        assert!(matches!(none.select(None), Selection::Ambiguous));
    }
}
