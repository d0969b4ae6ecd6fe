use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use vlab_emulators::{AccountingEmulator, AccountingOptions, Fault, FaultAction, KeycloakEmulator};

use crate::support::{admin_url, client, impatient_client, keycloak, service_token};

async fn create_group(
    http: &reqwest::Client,
    kc: &KeycloakEmulator,
    token: &str,
    name: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(admin_url(kc, "/groups"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
}

#[tokio::test]
async fn a_status_fault_answers_an_error_and_does_not_perform_the_call() {
    let kc = keycloak().await;
    let token = service_token(&kc).await;
    kc.inject(Fault::new("kc_create_group", FaultAction::Status(503)));
    let failed = create_group(&client(), &kc, &token, "a").await.unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.json::<Value>().await.unwrap()["error"].is_string());
    assert!(kc.group_by_name("a").is_none());
    let ok = create_group(&client(), &kc, &token, "a").await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let statuses: Vec<u16> = kc
        .calls()
        .iter()
        .filter(|c| c.operation == "kc_create_group")
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [503, 201]);
    assert_eq!(kc.calls()[1].method, "POST");
    assert_eq!(kc.calls()[1].path, "/admin/realms/obp-realm/groups");
}

#[tokio::test]
async fn skip_lets_the_first_calls_pass_and_fails_the_next_ones() {
    let kc = keycloak().await;
    let token = service_token(&kc).await;
    kc.inject(Fault {
        operation: "kc_create_group".into(),
        skip: 2,
        times: 2,
        action: FaultAction::Status(500),
    });
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = create_group(&client(), &kc, &token, &format!("g{i}"))
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 500, 500, 201]);
    // Other operations are not affected.
    assert_eq!(kc.call_count("kc_token"), 1);
}

#[tokio::test]
async fn drop_before_is_a_connection_error_and_the_call_is_not_performed() {
    let kc = keycloak().await;
    let token = service_token(&kc).await;
    kc.inject(Fault::new("kc_create_group", FaultAction::DropBefore));
    let error = create_group(&client(), &kc, &token, "dropped")
        .await
        .expect_err("the connection is closed without an answer");
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert!(kc.group_by_name("dropped").is_none());
    assert_eq!(kc.calls().last().unwrap().status, 0);

    kc.inject(Fault::new("kc_create_group", FaultAction::DropAfter));
    assert!(
        create_group(&client(), &kc, &token, "performed")
            .await
            .is_err()
    );
    assert!(kc.group_by_name("performed").is_some());

    // The same client keeps working afterwards.
    let again = create_group(&client(), &kc, &token, "fine").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn timeouts_stall_past_the_client_timeout_before_or_after_performing() {
    let kc = keycloak().await;
    let token = service_token(&kc).await;
    let impatient = impatient_client(Duration::from_millis(200));

    kc.inject(Fault::new(
        "kc_create_group",
        FaultAction::TimeoutBefore(Duration::from_millis(600)),
    ));
    let error = create_group(&impatient, &kc, &token, "before")
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");

    kc.inject(Fault::new(
        "kc_create_group",
        FaultAction::TimeoutAfter(Duration::from_millis(600)),
    ));
    let error = create_group(&impatient, &kc, &token, "after")
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(kc.group_by_name("before").is_none());
    assert!(kc.group_by_name("after").is_some());
}

#[tokio::test]
async fn latency_delays_every_call_and_operation_latency_only_its_operation() {
    let kc = keycloak().await;
    let token = service_token(&kc).await;
    let timed = |op: &'static str| {
        let kc = kc.clone();
        let token = token.clone();
        async move {
            let started = Instant::now();
            let response = match op {
                "kc_get_user" => client()
                    .get(admin_url(&kc, &format!("/users/{}", Uuid::new_v4())))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap(),
                _ => client()
                    .get(format!("{}/protocol/openid-connect/certs", kc.issuer()))
                    .send()
                    .await
                    .unwrap(),
            };
            assert!(response.status().is_client_error() || response.status().is_success());
            started.elapsed()
        }
    };
    kc.set_operation_latency("kc_get_user", Duration::from_millis(250));
    assert!(timed("kc_get_user").await >= Duration::from_millis(250));
    assert!(timed("kc_jwks").await < Duration::from_millis(250));
    kc.set_operation_latency("kc_get_user", Duration::ZERO);
    kc.set_latency(Duration::from_millis(150));
    assert!(timed("kc_jwks").await >= Duration::from_millis(150));
    kc.set_latency(Duration::ZERO);
    assert!(timed("kc_get_user").await < Duration::from_millis(150));
}

#[tokio::test]
async fn dev_faults_endpoint_injects_error_and_timeout_and_delete_clears_them() {
    let acc = AccountingEmulator::start(AccountingOptions::default())
        .await
        .unwrap();
    let base = acc.base_url();
    let lab = Uuid::new_v4();
    let create_lab = || {
        client()
            .post(format!("{base}/account/virtual-lab"))
            .header("authorization", "bearer t")
            .json(&json!({"name": "L", "id": Uuid::new_v4(), "balance": "0"}))
            .send()
    };
    let fault = |mode: &'static str| {
        client()
            .post(format!("{base}/_dev/faults"))
            .json(&json!({"operation": "acc_create_vlab_account", "mode": mode, "times": 1}))
            .send()
    };
    assert_eq!(fault("error").await.unwrap().status(), StatusCode::CREATED);
    let failed = create_lab().await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = failed.json().await.unwrap();
    assert!(body["error_code"].is_string() && body["message"].is_string());
    assert_eq!(create_lab().await.unwrap().status(), StatusCode::CREATED);

    fault("error").await.unwrap();
    let cleared = client()
        .delete(format!("{base}/_dev/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    assert_eq!(create_lab().await.unwrap().status(), StatusCode::CREATED);

    // A stalled call (120 s) neither performs nor keeps shutdown from returning.
    fault("timeout").await.unwrap();
    let stalled = tokio::spawn(
        client()
            .post(format!("{base}/account/virtual-lab"))
            .header("authorization", "bearer t")
            .json(&json!({"name": "L", "id": lab, "balance": "0"}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!acc.account_exists(lab));
    let started = Instant::now();
    acc.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(stalled.await.unwrap().is_err());
    assert!(!acc.account_exists(lab));
    assert!(
        client()
            .get(format!("{base}/_dev/balances"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let kc = keycloak().await;
    let url = format!("{}/protocol/openid-connect/certs", kc.issuer());
    let clone = kc.clone();
    drop(kc);
    assert!(
        client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    drop(clone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client().get(&url).send().await.is_err());
}
