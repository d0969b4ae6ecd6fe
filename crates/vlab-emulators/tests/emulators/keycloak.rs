use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use vlab_emulators::{KeycloakEmulator, KeycloakOptions};

use crate::support::{admin_url, client, keycloak, oidc_url, service_token, temp_dir, user};

/// Verifies a token the way the service does: the JWKS key of its kid, skipping `use: enc`.
async fn verify_with_jwks(kc: &KeycloakEmulator, token: &str) -> Value {
    let jwks: Value = client()
        .get(oidc_url(kc, "certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str() && k["use"] == "sig")
        .expect("the token's kid is a listed signing key");
    assert_eq!(key["alg"], "RS256");
    let decoding =
        DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn client_credentials_token_verifies_against_the_jwks_which_also_lists_an_enc_key() {
    let kc = keycloak().await;
    let response = client()
        .post(oidc_url(&kc, "token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "obpapp"),
            ("client_secret", "dev-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "profile email");
    let claims = verify_with_jwks(&kc, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], kc.issuer());
    assert_eq!(claims["azp"], "obpapp");

    let jwks: Value = client()
        .get(oidc_url(&kc, "certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["use"] == "enc" && k["alg"] == "RSA-OAEP" && k["kty"] == "RSA")
    );
    assert!(
        keys.iter().any(|k| k["use"] == "sig"
            && k["kid"] == kc.current_kid().as_str()
            && k["e"] == "AQAB")
    );
}

#[tokio::test]
async fn token_endpoint_refuses_a_bad_client_and_bad_user_credentials() {
    let kc = keycloak().await;
    kc.add_user(user("alice"));
    let send = |form: Vec<(&'static str, &'static str)>| {
        let url = oidc_url(&kc, "token");
        async move { client().post(url).form(&form).send().await.unwrap() }
    };
    let bad_secret = send(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "obpapp"),
        ("client_secret", "nope"),
    ])
    .await;
    assert_eq!(bad_secret.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad_secret.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"})
    );
    let bad_password = send(vec![
        ("grant_type", "password"),
        ("client_id", "obpapp"),
        ("client_secret", "dev-secret"),
        ("username", "alice"),
        ("password", "wrong"),
    ])
    .await;
    assert_eq!(bad_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad_password.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant", "error_description": "Invalid user credentials"})
    );
    let no_grant = send(vec![("client_id", "obpapp")]).await;
    assert_eq!(no_grant.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn userinfo_answers_live_groups_for_a_password_grant_token() {
    let kc = keycloak().await;
    let alice = user("alice");
    kc.add_user(alice.clone());
    let svc_admin = kc.ensure_group_path("/service/virtual-lab-svc/admin");
    kc.add_user_to_group(alice.id, &svc_admin);

    let login: Value = client()
        .post(oidc_url(&kc, "token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "obpapp"),
            ("client_secret", "dev-secret"),
            ("username", "alice"),
            ("password", "test"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["scope"], "openid profile email");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let claims = verify_with_jwks(&kc, &token).await;
    assert_eq!(claims["sub"], alice.id.to_string());
    assert_eq!(claims["aud"], "account");
    assert_eq!(claims["preferred_username"], "alice");

    let userinfo = || async {
        client()
            .get(oidc_url(&kc, "userinfo"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    let first: Value = userinfo().await.json().await.unwrap();
    assert_eq!(
        first,
        json!({
            "sub": alice.id.to_string(),
            "email_verified": false,
            "name": "First-alice Last",
            "preferred_username": "alice",
            "given_name": "First-alice",
            "family_name": "Last",
            "email": "alice@example.org",
            "groups": ["/service/virtual-lab-svc/admin"],
        })
    );

    // A membership added through the admin API shows up at once.
    let svc = service_token(&kc).await;
    let created = client()
        .post(admin_url(&kc, "/groups"))
        .bearer_auth(&svc)
        .json(&json!({"name": "vlab/1/admin"}))
        .send()
        .await
        .unwrap();
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let group_id = location.rsplit('/').next().unwrap();
    let put = client()
        .put(admin_url(
            &kc,
            &format!("/users/{}/groups/{group_id}", alice.id),
        ))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let second: Value = userinfo().await.json().await.unwrap();
    assert_eq!(
        second["groups"],
        json!(["/service/virtual-lab-svc/admin", "/vlab/1/admin"])
    );
    assert_eq!(
        kc.user_group_paths(alice.id),
        ["/service/virtual-lab-svc/admin", "/vlab/1/admin"]
    );
}

#[tokio::test]
async fn userinfo_refuses_expired_revoked_and_unknown_key_tokens_and_a_token_without_openid() {
    let kc = keycloak().await;
    let alice = user("alice");
    kc.add_user(alice.clone());
    let now = chrono::Utc::now().timestamp();
    let get = |token: String| {
        let url = oidc_url(&kc, "userinfo");
        async move { client().get(url).bearer_auth(token).send().await.unwrap() }
    };

    let expired = kc.mint_token_with_claims(json!({
        "iss": kc.issuer(), "sub": alice.id, "exp": now - 5, "scope": "openid", "typ": "Bearer",
    }));
    let response = get(expired).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""));
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_token"
    );

    let no_openid = kc.mint_token_with_claims(json!({
        "iss": kc.issuer(), "sub": alice.id, "exp": now + 60, "scope": "profile email",
    }));
    let response = get(no_openid).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );

    // Rotation keeps old tokens valid; removing the key does not.
    let old = kc.mint_token(alice.id, Duration::from_secs(60));
    let old_kid = kc.current_kid();
    kc.rotate_signing_key();
    assert_ne!(kc.current_kid(), old_kid);
    let new = kc.mint_token(alice.id, Duration::from_secs(60));
    assert_eq!(get(old.clone()).await.status(), StatusCode::OK);
    assert_eq!(get(new.clone()).await.status(), StatusCode::OK);
    kc.remove_signing_key(&old_kid);
    assert_eq!(get(old).await.status(), StatusCode::UNAUTHORIZED);

    kc.revoke_user_sessions(alice.id);
    assert_eq!(get(new).await.status(), StatusCode::UNAUTHORIZED);
    let after_login_again = kc.mint_token(alice.id, Duration::from_secs(60));
    assert_eq!(get(after_login_again).await.status(), StatusCode::OK);

    assert_eq!(
        get("garbage".into()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn admin_calls_need_a_valid_service_token() {
    let kc = keycloak().await;
    let alice = user("alice");
    kc.add_user(alice.clone());
    let url = admin_url(&kc, &format!("/users/{}", alice.id));

    let none = client().get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.json::<Value>().await.unwrap(),
        json!({"error": "HTTP 401 Unauthorized"})
    );
    let foreign = client()
        .get(&url)
        .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::UNAUTHORIZED);
    let user_token = kc.mint_token(alice.id, Duration::from_secs(60));
    let as_user = client()
        .get(&url)
        .bearer_auth(user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);

    let ok = client()
        .get(&url)
        .bearer_auth(service_token(&kc).await)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["id"], alice.id.to_string());
    assert_eq!(body["username"], "alice");
    assert_eq!(body["email"], "alice@example.org");
    assert_eq!(body["firstName"], "First-alice");
    assert_eq!(body["lastName"], "Last");
    assert_eq!(body["enabled"], true);
    assert!(body["createdTimestamp"].as_i64().unwrap() > 1_600_000_000_000);

    let missing = client()
        .get(admin_url(&kc, &format!("/users/{}", Uuid::new_v4())))
        .bearer_auth(service_token(&kc).await)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"error": "User not found"})
    );
}

#[tokio::test]
async fn group_creation_answers_201_with_location_then_409_for_the_same_name() {
    let kc = keycloak().await;
    let svc = service_token(&kc).await;
    let name = format!("vlab/{}/admin", Uuid::new_v4());
    let create = || {
        client()
            .post(admin_url(&kc, "/groups"))
            .bearer_auth(&svc)
            .json(&json!({ "name": name }))
            .send()
    };
    let created = create().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&admin_url(&kc, "/groups/")));
    assert!(created.bytes().await.unwrap().is_empty());
    let id = location.rsplit('/').next().unwrap().to_owned();
    let info = kc.group_by_name(&name).unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.path, format!("/{name}"));

    let again = create().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"errorMessage": format!("Top level group named '{name}' already exists.")})
    );
    assert_eq!(kc.call_count("kc_create_group"), 2);
    let statuses: Vec<u16> = kc.calls().iter().map(|c| c.status).collect();
    assert!(statuses.ends_with(&[201, 409]));
}

#[tokio::test]
async fn find_group_matches_exactly_or_by_substring_and_pages() {
    let kc = keycloak().await;
    let svc = service_token(&kc).await;
    let nested = kc.ensure_group_path("/service/virtual-lab-svc/admin");
    for name in ["vlab/a/admin", "vlab/a/member", "vlab/b/admin"] {
        let status = client()
            .post(admin_url(&kc, "/groups"))
            .bearer_auth(&svc)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::CREATED);
    }
    let find = |query: Vec<(&'static str, &'static str)>| {
        let url = admin_url(&kc, "/groups");
        let svc = svc.clone();
        async move {
            let response = client()
                .get(url)
                .query(&query)
                .bearer_auth(svc)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Vec<Value>>().await.unwrap()
        }
    };

    let exact = find(vec![
        ("search", "vlab/a/admin"),
        ("exact", "true"),
        ("briefRepresentation", "true"),
        ("first", "0"),
        ("max", "10"),
    ])
    .await;
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0]["name"], "vlab/a/admin");
    assert_eq!(exact[0]["path"], "/vlab/a/admin");
    assert_eq!(exact[0]["subGroupCount"], 0);
    assert_eq!(exact[0]["subGroups"], json!([]));

    // A nested match comes back under its top-level ancestor, as Keycloak does.
    let nested_match = find(vec![("search", "admin"), ("exact", "true")]).await;
    assert_eq!(nested_match.len(), 1);
    assert_eq!(nested_match[0]["path"], "/service");
    let leaf = &nested_match[0]["subGroups"][0]["subGroups"][0];
    assert_eq!(leaf["id"], nested.as_str());
    assert_eq!(leaf["path"], "/service/virtual-lab-svc/admin");

    let substring = find(vec![("search", "VLAB/A")]).await;
    let names: Vec<&str> = substring
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vlab/a/admin", "vlab/a/member"]);
    let paged = find(vec![("search", "vlab"), ("first", "1"), ("max", "1")]).await;
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0]["name"], "vlab/a/member");
    assert!(
        find(vec![("search", "nothing"), ("exact", "true")])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn memberships_are_idempotent_listed_in_pages_and_removed_with_the_group() {
    let kc = keycloak().await;
    let svc = service_token(&kc).await;
    let group = kc.ensure_group_path("/proj/x/y/member");
    let mut users = Vec::new();
    for name in ["erin", "bob", "dave", "alice", "carol"] {
        let u = user(name);
        kc.add_user(u.clone());
        users.push(u);
    }
    let call = |method: reqwest::Method, path: String| {
        let url = admin_url(&kc, &path);
        let svc = svc.clone();
        async move {
            client()
                .request(method, url)
                .bearer_auth(svc)
                .send()
                .await
                .unwrap()
        }
    };
    for u in &users {
        for _ in 0..2 {
            let r = call(
                reqwest::Method::PUT,
                format!("/users/{}/groups/{group}", u.id),
            )
            .await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    }
    let mut seen = Vec::new();
    for first in [0, 2, 4] {
        let page: Vec<Value> = call(
            reqwest::Method::GET,
            format!("/groups/{group}/members?first={first}&max=2&briefRepresentation=true"),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(page.len(), if first == 4 { 1 } else { 2 });
        seen.extend(
            page.iter()
                .map(|m| m["username"].as_str().unwrap().to_owned()),
        );
        assert_eq!(page[0]["enabled"], true);
        assert_eq!(page[0]["emailVerified"], false);
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);

    let removed = call(
        reqwest::Method::DELETE,
        format!("/users/{}/groups/{group}", users[0].id),
    )
    .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let again = call(
        reqwest::Method::DELETE,
        format!("/users/{}/groups/{group}", users[0].id),
    )
    .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(kc.group_by_name("member").unwrap().members.len(), 4);

    let unknown_user = call(
        reqwest::Method::PUT,
        format!("/users/{}/groups/{group}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(unknown_user.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown_user.json::<Value>().await.unwrap(),
        json!({"error": "User not found"})
    );
    let unknown_group = call(
        reqwest::Method::DELETE,
        format!("/users/{}/groups/{}", users[1].id, Uuid::new_v4()),
    )
    .await;
    assert_eq!(unknown_group.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown_group.json::<Value>().await.unwrap(),
        json!({"error": "Group not found"})
    );

    // Deleting the top-level group takes the subgroups and memberships with it.
    let top = kc.group_by_name("proj").unwrap().id;
    let deleted = call(reqwest::Method::DELETE, format!("/groups/{top}")).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(kc.groups().is_empty());
    assert!(kc.user_group_paths(users[1].id).is_empty());
    let gone = call(reqwest::Method::DELETE, format!("/groups/{top}")).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json::<Value>().await.unwrap(),
        json!({"error": "Could not find group by id"})
    );
    let members_gone = call(reqwest::Method::GET, format!("/groups/{group}/members")).await;
    assert_eq!(members_gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_state_file_keeps_keys_users_and_groups_across_restarts() {
    let dir = temp_dir("kc-state");
    let opts = KeycloakOptions {
        state_file: Some(dir.join("keycloak.json")),
        ..KeycloakOptions::default()
    };
    let alice = user("alice");
    let (token, group, port) = {
        let kc = KeycloakEmulator::start(opts.clone()).await.unwrap();
        kc.add_user(alice.clone());
        let group = kc.ensure_group_path("/service/virtual-lab-svc/admin");
        kc.add_user_to_group(alice.id, &group);
        let token = kc.mint_token(alice.id, Duration::from_secs(600));
        let port = kc.addr().port();
        kc.shutdown().await;
        (token, group, port)
    };
    // The issuer includes the port, so the restarted emulator binds the same one.
    let kc = KeycloakEmulator::start(KeycloakOptions {
        bind: ([127, 0, 0, 1], port).into(),
        ..opts
    })
    .await
    .unwrap();
    assert_eq!(kc.group_by_name("admin").unwrap().id, group);
    let info: Value = client()
        .get(oidc_url(&kc, "userinfo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["groups"], json!(["/service/virtual-lab-svc/admin"]));
    kc.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
