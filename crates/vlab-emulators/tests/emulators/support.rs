use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;
use vlab_emulators::{KeycloakEmulator, KeycloakOptions, UserSpec};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client with a short per-request timeout, for the stall faults.
pub fn impatient_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

pub async fn keycloak() -> KeycloakEmulator {
    KeycloakEmulator::start(KeycloakOptions::default())
        .await
        .unwrap()
}

pub fn admin_url(kc: &KeycloakEmulator, path: &str) -> String {
    format!("{}/admin/realms/obp-realm{path}", kc.base_url())
}

pub fn oidc_url(kc: &KeycloakEmulator, endpoint: &str) -> String {
    format!("{}/protocol/openid-connect/{endpoint}", kc.issuer())
}

/// A service token from the token endpoint, as the service gets it.
pub async fn service_token(kc: &KeycloakEmulator) -> String {
    let body: Value = client()
        .post(oidc_url(kc, "token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "obpapp"),
            ("client_secret", "dev-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

pub fn user(username: &str) -> UserSpec {
    UserSpec {
        id: Uuid::new_v4(),
        username: username.to_owned(),
        email: format!("{username}@example.org"),
        first_name: Some(format!("First-{username}")),
        last_name: Some("Last".to_owned()),
        password: "test".to_owned(),
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vlab-emulators-{name}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
