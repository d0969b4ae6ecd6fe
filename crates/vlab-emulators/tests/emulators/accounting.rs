use std::str::FromStr as _;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;
use vlab_emulators::{AccountingEmulator, AccountingOptions};

use crate::support::{client, temp_dir};

struct Acc {
    emulator: AccountingEmulator,
}

impl Acc {
    async fn start() -> Self {
        Self {
            emulator: AccountingEmulator::start(AccountingOptions::default())
                .await
                .unwrap(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = client()
            .post(format!("{}{path}", self.emulator.base_url()))
            .header("authorization", "bearer service-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A lab with one project; returns (lab, project).
    async fn lab_with_project(&self) -> (Uuid, Uuid) {
        let (lab, project) = (Uuid::new_v4(), Uuid::new_v4());
        let (status, body) = self
            .post(
                "/account/virtual-lab",
                json!({"name": "Lab", "id": lab, "balance": "0"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            body,
            json!({"message": "Virtual lab created", "data": {"id": lab, "name": "Lab", "balance": "0.00"}})
        );
        let (status, body) = self
            .post(
                "/account/project",
                json!({"name": "Proj", "id": project, "vlab_id": lab}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            body,
            json!({"message": "Project created", "data": {"id": project, "name": "Proj"}})
        );
        (lab, project)
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test]
async fn grant_creates_credits_and_deplete_project_returns_them_exactly() {
    let acc = Acc::start().await;
    let (lab, project) = acc.lab_with_project().await;
    for amount in [json!(0.1), json!(0.2), json!(200.0)] {
        let (status, body) = acc
            .post(
                "/budget/grant",
                json!({"proj_id": project, "amount": amount}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"message": "Grant budget operation executed", "data": null})
        );
    }
    assert_eq!(acc.emulator.balance(project), Some(dec("200.3")));
    assert_eq!(acc.emulator.balance(lab), Some(Decimal::ZERO));
    acc.emulator.spend(project, dec("0.05")).unwrap();

    let (status, body) = acc
        .post("/budget/deplete/project", json!({"proj_id": project}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"message": "Deplete project operation executed", "data": {"total_amount": "200.25"}})
    );
    let (_, again) = acc
        .post("/budget/deplete/project", json!({"proj_id": project}))
        .await;
    assert_eq!(again["data"]["total_amount"], "0.00");
    assert_eq!(acc.emulator.balance(project), Some(Decimal::ZERO));
    assert_eq!(acc.emulator.call_count("acc_grant"), 3);
    assert_eq!(acc.emulator.call_count("acc_deplete_project"), 2);
}

#[tokio::test]
async fn deplete_lab_moves_positive_project_balances_and_the_lab_balance() {
    let acc = Acc::start().await;
    let (lab, p1) = acc.lab_with_project().await;
    let p2 = Uuid::new_v4();
    acc.post(
        "/account/project",
        json!({"name": "P2", "id": p2, "vlab_id": lab}),
    )
    .await;
    acc.post("/budget/grant", json!({"proj_id": p1, "amount": 150}))
        .await;
    acc.post("/budget/top-up", json!({"vlab_id": lab, "amount": "100"}))
        .await;
    let (status, _) = acc
        .post(
            "/budget/assign",
            json!({"vlab_id": lab, "proj_id": p2, "amount": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = acc
        .post(
            "/budget/assign",
            json!({"vlab_id": lab, "proj_id": p2, "amount": 71}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], "INSUFFICIENT_FUNDS");
    let (status, _) = acc
        .post(
            "/budget/reverse",
            json!({"vlab_id": lab, "proj_id": p2, "amount": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = acc
        .post(
            "/budget/reverse",
            json!({"vlab_id": lab, "proj_id": p2, "amount": 21}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (StatusCode::BAD_REQUEST, &json!("INSUFFICIENT_FUNDS"))
    );
    // p1 150, p2 20, lab 80.
    let (status, body) = acc
        .post("/budget/deplete/virtual-lab", json!({"vlab_id": lab}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"message": "Deplete virtual lab operation executed", "data": {"total_amount": "250.00"}})
    );
    assert!(
        acc.emulator
            .accounts()
            .iter()
            .all(|a| a.balance == Decimal::ZERO)
    );

    let balances: Value = client()
        .get(format!("{}/_dev/balances", acc.emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = balances
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["virtual-lab", "project", "project", "system"]);
    assert_eq!(balances[1]["balance"], "0.00");
    assert_eq!(balances[3]["balance"], "0.00");
}

#[tokio::test]
async fn errors_use_the_accounting_error_body() {
    let acc = Acc::start().await;
    let (lab, project) = acc.lab_with_project().await;

    let (status, body) = acc
        .post(
            "/budget/grant",
            json!({"proj_id": Uuid::new_v4(), "amount": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error_code": "ENTITY_NOT_FOUND", "message": "Account not found", "details": null})
    );
    for bad in [
        json!({"proj_id": project, "amount": 0}),
        json!({"proj_id": project, "amount": -1.5}),
        json!({"proj_id": project}),
        json!({"proj_id": "not-a-uuid", "amount": 1}),
        json!({"proj_id": project, "amount": "lots"}),
        json!([1, 2]),
    ] {
        let (status, body) = acc.post("/budget/grant", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(body["error_code"], "INVALID_REQUEST", "{bad}");
        assert!(body["message"].is_string());
    }
    let (status, _) = acc
        .post(
            "/account/project",
            json!({"name": "P", "id": Uuid::new_v4(), "vlab_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = acc
        .post(
            "/account/virtual-lab",
            json!({"name": "again", "id": lab, "balance": "0"}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["error_code"].is_string() && body["message"].is_string());
    assert!(body.as_object().unwrap().contains_key("details"));

    let raw = |auth: Option<&'static str>| {
        let url = format!("{}/budget/deplete/project", acc.emulator.base_url());
        async move {
            let mut request = client().post(url).json(&json!({"proj_id": project}));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            request.send().await.unwrap().status()
        }
    };
    assert_eq!(raw(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(raw(Some("bearer ")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(raw(Some("Basic abc")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(raw(Some("BEARER abc")).await, StatusCode::OK);
}

#[tokio::test]
async fn the_state_file_keeps_the_ledger_across_restarts() {
    let dir = temp_dir("acc-state");
    let opts = AccountingOptions {
        state_file: Some(dir.join("accounting.json")),
        ..AccountingOptions::default()
    };
    let project = {
        let acc = Acc {
            emulator: AccountingEmulator::start(opts.clone()).await.unwrap(),
        };
        let (_, project) = acc.lab_with_project().await;
        acc.post(
            "/budget/grant",
            json!({"proj_id": project, "amount": 12.34}),
        )
        .await;
        acc.emulator.shutdown().await;
        project
    };
    let again = AccountingEmulator::start(opts).await.unwrap();
    assert_eq!(again.balance(project), Some(dec("12.34")));
    assert!(again.account_exists(project));
    assert_eq!(again.accounts().len(), 2);
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_lab_balance_lists_its_projects_and_dev_spend_draws_on_them() {
    let acc = Acc::start().await;
    let (lab, project) = acc.lab_with_project().await;
    let (status, _) = acc
        .post(
            "/budget/grant",
            json!({"proj_id": project, "amount": 200.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A student's jobs spend 20.5 credits; no token is needed on a /_dev route.
    let response = client()
        .post(format!("{}/_dev/spend", acc.emulator.base_url()))
        .json(&json!({"proj_id": project, "amount": "20.5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        acc.emulator.balance(project),
        Some(Decimal::from_str("179.5").unwrap())
    );

    let get = |path: String, token: Option<&'static str>| {
        let mut request = client().get(format!("{}{path}", acc.emulator.base_url()));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let bearer = Some("bearer service-token");
    let (status, body) = get(
        format!("/balance/virtual-lab/{lab}?include_projects=true"),
        bearer,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"message": "Balance for virtual-lab including projects",
               "data": {"vlab_id": lab, "balance": "0.00",
                        "projects": [{"proj_id": project, "balance": "179.50",
                                      "reservation": "0.00"}]}})
    );
    let (status, body) = get(format!("/balance/virtual-lab/{lab}"), bearer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].get("projects"), None, "{body}");

    let (status, body) = get(format!("/balance/virtual-lab/{}", Uuid::new_v4()), bearer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "ENTITY_NOT_FOUND");
    let (status, _) = get(format!("/balance/virtual-lab/{lab}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(acc.emulator.call_count("acc_vlab_balance"), 4);
}

#[tokio::test]
async fn the_project_balance_is_read_with_a_get_and_unknown_accounts_are_404() {
    let acc = Acc::start().await;
    let (_, project) = acc.lab_with_project().await;
    acc.post(
        "/budget/grant",
        json!({"proj_id": project, "amount": 200.0}),
    )
    .await;
    acc.emulator
        .spend(project, Decimal::from_str("54.5").unwrap())
        .unwrap();
    let get = |id: Uuid, auth: bool| {
        let mut request = client().get(format!("{}/balance/project/{id}", acc.emulator.base_url()));
        if auth {
            request = request.header("authorization", "Bearer service-token");
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = get(project, true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"message": "Balance for project",
               "data": {"proj_id": project, "balance": "145.50", "reservation": "0.00"}})
    );
    let (status, body) = get(Uuid::new_v4(), true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "ENTITY_NOT_FOUND");
    let (status, _) = get(project, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(acc.emulator.call_count("acc_project_balance"), 3);
}

#[tokio::test]
async fn the_call_log_records_the_idempotency_key_and_ignores_it_like_the_service() {
    let acc = Acc::start().await;
    let (_lab, project) = acc.lab_with_project().await;
    for _ in 0..2 {
        let response = client()
            .post(format!("{}/budget/grant", acc.emulator.base_url()))
            .header("authorization", "bearer service-token")
            .header("idempotency-key", "saga-1:6")
            .json(&json!({"proj_id": project, "amount": 10.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let grants: Vec<_> = acc
        .emulator
        .calls()
        .into_iter()
        .filter(|c| c.operation == "acc_grant")
        .map(|c| c.idempotency_key)
        .collect();
    assert_eq!(
        grants,
        [Some("saga-1:6".to_owned()), Some("saga-1:6".to_owned())]
    );
    // The accounting service ignores the header today: both grants created credits.
    assert_eq!(acc.emulator.balance(project), Some(dec("20")));
    let creations: Vec<_> = acc
        .emulator
        .calls()
        .into_iter()
        .filter(|c| c.operation == "acc_create_project_account")
        .map(|c| c.idempotency_key)
        .collect();
    assert_eq!(creations, [None]);
}
