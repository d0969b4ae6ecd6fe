//! The accounting service client (integrations.md §3).
//!
//! Every call is a JSON `POST` with `Authorization: bearer <service token>`. The calls are not
//! idempotent, so they are retried only when the connection could not be opened; a 401 means
//! the token was rejected and the request not processed, so the token is refreshed and the call
//! replayed once. Amounts in answers are decimal strings, parsed exactly into [`Decimal`].

use std::str::FromStr;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::http::{
    Call, Outbound, RetryPolicy, Service, read_text, record_decode_error, truncate_body,
};
use super::service_token::ServiceToken;
use super::{Accounting, ClientError, IdempotencyKey, ProjectBalance, VlabBalance};
use crate::config::ExternalConfig;

/// Reads are retried like Keycloak GETs: the service acts on nothing.
const fn read(operation: &'static str) -> Call {
    Call {
        service: Service::Accounting,
        operation,
        retry: RetryPolicy::Idempotent,
    }
}

const fn call(operation: &'static str) -> Call {
    Call {
        service: Service::Accounting,
        operation,
        retry: RetryPolicy::ConnectOnly,
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

const CREATE_VLAB_ACCOUNT: Call = call("acc_create_vlab_account");
const CREATE_PROJECT_ACCOUNT: Call = call("acc_create_project_account");
const GRANT: Call = call("acc_grant");
const DEPLETE_PROJECT: Call = call("acc_deplete_project");
const DEPLETE_VLAB: Call = call("acc_deplete_vlab");
const PROJECT_BALANCE: Call = read("acc_project_balance");
const VLAB_BALANCE: Call = read("acc_vlab_balance");

/// The accounting client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccountingClient {
    outbound: Outbound,
    token: ServiceToken,
    /// `ACCOUNTING_BASE_URL` without its trailing `/`.
    base: String,
}

/// The error body of the accounting service.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error_code: String,
    message: String,
}

impl AccountingClient {
    pub fn new(outbound: Outbound, token: ServiceToken, config: &ExternalConfig) -> Self {
        Self {
            outbound,
            token,
            base: config.accounting_base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Posts `body` to `path`; a 2xx yields the response (its body unread), anything else an
    /// error.
    async fn post(
        &self,
        call: Call,
        path: &str,
        body: serde_json::Value,
        key: Option<&IdempotencyKey>,
    ) -> Result<reqwest::Response, ClientError> {
        self.request(call, path, Some((body, key))).await
    }

    /// A `POST` of `body` (with its idempotency key), or a `GET` without one; a 2xx yields the
    /// response (its body unread), anything else an error.
    async fn request(
        &self,
        call: Call,
        path: &str,
        body: Option<(serde_json::Value, Option<&IdempotencyKey>)>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let token = self.service_token(call).await?;
        let mut response = self.send_once(call, &url, body.as_ref(), &token).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            drop(response);
            tracing::info!(
                operation = call.operation,
                "the service token was rejected; refreshing it and replaying once"
            );
            self.token.invalidate(&token).await;
            let token = self.service_token(call).await?;
            response = self.send_once(call, &url, body.as_ref(), &token).await?;
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(error_from(call, status, response).await)
    }

    /// One request: a `POST` of `body`, or a `GET` when there is none. A replay after a
    /// rejected token or a connect failure carries the same idempotency key.
    async fn send_once(
        &self,
        call: Call,
        url: &str,
        body: Option<&(serde_json::Value, Option<&IdempotencyKey>)>,
        token: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let mut authorization =
            HeaderValue::from_str(&format!("bearer {token}")).map_err(|_| ClientError::Token {
                operation: call.operation,
                message: "the service token is not a valid header value".to_owned(),
            })?;
        authorization.set_sensitive(true);
        self.outbound
            .send(call, |client| {
                let request = match body {
                    Some((body, None)) => client.post(url).json(body),
                    Some((body, Some(key))) => client
                        .post(url)
                        .json(body)
                        .header(IDEMPOTENCY_KEY, key.as_str()),
                    None => client.get(url),
                };
                request.header(AUTHORIZATION, authorization.clone())
            })
            .await
    }

    async fn service_token(&self, call: Call) -> Result<String, ClientError> {
        self.token.get().await.map_err(|err| ClientError::Token {
            operation: call.operation,
            message: err.to_string(),
        })
    }
}

/// Reads an error answer: the accounting error body becomes [`ClientError::Accounting`],
/// anything else [`ClientError::Status`]. Both are logged at `warn`.
async fn error_from(call: Call, status: StatusCode, response: reqwest::Response) -> ClientError {
    let status = status.as_u16();
    let body = match response.text().await {
        Ok(body) => body,
        Err(err) => format!("<unreadable body: {err}>"),
    };
    if let Ok(parsed) = serde_json::from_str::<ErrorBody>(&body) {
        tracing::warn!(
            operation = call.operation,
            status,
            error_code = %parsed.error_code,
            message = %parsed.message,
            "the accounting service refused the call"
        );
        return ClientError::Accounting {
            operation: call.operation,
            status,
            error_code: parsed.error_code,
            message: parsed.message,
        };
    }
    let body = truncate_body(body);
    tracing::warn!(
        operation = call.operation,
        status,
        body = %body,
        "unexpected answer from accounting"
    );
    ClientError::Status {
        operation: call.operation,
        status,
        body,
    }
}

/// A decimal amount as the accounting service writes it: a JSON string (`"200.00"`, the
/// documented form), or a number taken through its decimal text, never as a float value.
fn decimal(value: &serde_json::Value, name: &str) -> Result<Decimal, String> {
    let text = match value {
        serde_json::Value::String(text) => text.trim().to_owned(),
        serde_json::Value::Number(number) => number.to_string(),
        other => return Err(format!("{name} is not a decimal: {other}")),
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|err| format!("{name} {text:?} is not a decimal: {err}"))
}

/// The decimal under `key` of `object`; `name` says where it is in the answer.
fn decimal_at(object: &serde_json::Value, key: &str, name: &str) -> Result<Decimal, String> {
    object
        .get(key)
        .ok_or_else(|| format!("no {name}"))
        .and_then(|v| decimal(v, name))
}

/// `data` of an `acc_vlab_balance` answer with its projects.
pub fn parse_vlab_balance(body: &str) -> Result<VlabBalance, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let data = value.get("data").ok_or_else(|| "no data".to_owned())?;
    let mut projects = std::collections::HashMap::new();
    let listed = data.get("projects").and_then(|p| p.as_array());
    for (i, project) in listed.into_iter().flatten().enumerate() {
        let id = project
            .get("proj_id")
            .and_then(|id| id.as_str())
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| format!("data.projects[{i}].proj_id is not a UUID"))?;
        let balance = decimal_at(project, "balance", &format!("data.projects[{i}].balance"))?;
        // Optional: a deplete does not move it, and nothing here needs it to be present.
        let reservation = match project.get("reservation") {
            Some(v) => decimal(v, &format!("data.projects[{i}].reservation"))?,
            None => Decimal::ZERO,
        };
        projects.insert(
            id,
            ProjectBalance {
                balance,
                reservation,
            },
        );
    }
    Ok(VlabBalance {
        balance: decimal_at(data, "balance", "data.balance")?,
        projects,
    })
}

/// `data.total_amount` of a deplete answer, parsed exactly. A JSON string is the documented
/// form (`"200.00"`); a JSON number is accepted through its decimal text, never as a float value.
pub fn parse_total_amount(body: &str) -> Result<Decimal, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let amount = value
        .get("data")
        .and_then(|data| data.get("total_amount"))
        .ok_or_else(|| "no data.total_amount".to_owned())?;
    decimal(amount, "data.total_amount")
}

/// `data.balance` and `data.reservation` of an `acc_project_balance` answer.
pub fn parse_balance(body: &str) -> Result<ProjectBalance, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let data = value.get("data").ok_or_else(|| "no data".to_owned())?;
    Ok(ProjectBalance {
        balance: decimal_at(data, "balance", "data.balance")?,
        reservation: decimal_at(data, "reservation", "data.reservation")?,
    })
}

/// Parses a 2xx answer's text; one that does not parse is a decode error, counted and logged
/// with the (truncated) body.
fn decode<T>(
    call: Call,
    text: String,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ClientError> {
    parse(&text).map_err(|message| {
        record_decode_error(call);
        tracing::warn!(
            operation = call.operation,
            body = %truncate_body(text),
            %message,
            "the accounting answer is not readable"
        );
        ClientError::Decode {
            operation: call.operation,
            message,
        }
    })
}

#[async_trait]
impl Accounting for AccountingClient {
    async fn create_vlab_account(
        &self,
        vlab_id: Uuid,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "name": name, "id": vlab_id, "balance": "0" });
        self.post(CREATE_VLAB_ACCOUNT, "/account/virtual-lab", body, key)
            .await
            .map(drop)
    }

    async fn create_project_account(
        &self,
        project_id: Uuid,
        vlab_id: Uuid,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "name": name, "id": project_id, "vlab_id": vlab_id });
        self.post(CREATE_PROJECT_ACCOUNT, "/account/project", body, key)
            .await
            .map(drop)
    }

    async fn grant(
        &self,
        project_id: Uuid,
        amount: i64,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError> {
        // A JSON number with a fraction part (`200.0`), as the existing service sends it.
        #[allow(clippy::cast_precision_loss)]
        let amount = amount as f64;
        let body = serde_json::json!({ "proj_id": project_id, "amount": amount });
        self.post(GRANT, "/budget/grant", body, key).await.map(drop)
    }

    async fn deplete_project(&self, project_id: Uuid) -> Result<Decimal, ClientError> {
        let body = serde_json::json!({ "proj_id": project_id });
        let response = self
            .post(DEPLETE_PROJECT, "/budget/deplete/project", body, None)
            .await?;
        let text = read_text(DEPLETE_PROJECT, response).await?;
        decode(DEPLETE_PROJECT, text, parse_total_amount)
    }

    async fn deplete_vlab(&self, vlab_id: Uuid) -> Result<Option<Decimal>, ClientError> {
        let body = serde_json::json!({ "vlab_id": vlab_id });
        let response = self
            .post(DEPLETE_VLAB, "/budget/deplete/virtual-lab", body, None)
            .await?;
        // The lab deplete succeeded with the 2xx; an unreadable amount is only unknown.
        let amount = match read_text(DEPLETE_VLAB, response).await {
            Ok(text) => parse_total_amount(&text)
                .inspect_err(|message| {
                    tracing::warn!(operation = DEPLETE_VLAB.operation, %message, "the lab deplete answer has no readable total_amount");
                })
                .ok(),
            Err(err) => {
                tracing::warn!(operation = DEPLETE_VLAB.operation, error = %err, "the lab deplete answer could not be read");
                None
            }
        };
        Ok(amount)
    }

    async fn project_balance(&self, project_id: Uuid) -> Result<ProjectBalance, ClientError> {
        let path = format!("/balance/project/{project_id}");
        let response = self.request(PROJECT_BALANCE, &path, None).await?;
        let text = read_text(PROJECT_BALANCE, response).await?;
        decode(PROJECT_BALANCE, text, parse_balance)
    }

    async fn vlab_balance(&self, vlab_id: Uuid) -> Result<VlabBalance, ClientError> {
        let path = format!("/balance/virtual-lab/{vlab_id}?include_projects=true");
        let response = self.request(VLAB_BALANCE, &path, None).await?;
        let text = read_text(VLAB_BALANCE, response).await?;
        decode(VLAB_BALANCE, text, parse_vlab_balance)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::OriginalUri;
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{any, post};
    use serde_json::json;

    use super::*;
    use crate::clients::FailureClass;
    use crate::clients::http::test_support::{closed_port, config, outbound, serve};

    /// One request the test accounting service saw: path, authorization header, body,
    /// `Idempotency-Key` header (empty when absent).
    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    /// A Keycloak token endpoint (`token-1`, `token-2`, …) and an accounting service answering
    /// with `answer(path, authorization, body)`, after `delay`.
    async fn accounting<F>(
        delay: Duration,
        answer: F,
    ) -> (AccountingClient, Seen, Arc<Mutex<usize>>)
    where
        F: Fn(&str, &str, &str) -> Response + Clone + Send + Sync + 'static,
    {
        let tokens = Arc::new(Mutex::new(0usize));
        let token_counter = tokens.clone();
        let kc = Router::new().route(
            "/realms/obp-realm/protocol/openid-connect/token",
            post(move || {
                let token_counter = token_counter.clone();
                async move {
                    let mut n = token_counter.lock().unwrap();
                    *n += 1;
                    axum::Json(json!({"access_token": format!("token-{n}"), "expires_in": 300}))
                }
            }),
        );
        let seen: Seen = Arc::default();
        let store = seen.clone();
        let acc = Router::new().route(
            "/{*path}",
            any(
                move |OriginalUri(uri): OriginalUri, headers: HeaderMap, body: String| {
                    let store = store.clone();
                    let answer = answer.clone();
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        assert_eq!(
                            headers.get("content-type").and_then(|v| v.to_str().ok()),
                            Some("application/json")
                        );
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        store.lock().unwrap().push((
                            uri.path().to_owned(),
                            auth.clone(),
                            body.clone(),
                            key,
                        ));
                        tokio::time::sleep(delay).await;
                        answer(uri.path(), &auth, &body)
                    }
                },
            ),
        );
        let kc_base = serve(kc).await;
        let acc_base = serve(acc).await;
        let cfg = config(&kc_base, &format!("{acc_base}/"));
        let out = outbound(Duration::from_millis(300));
        let token = ServiceToken::new(out.clone(), &cfg);
        (AccountingClient::new(out, token, &cfg), seen, tokens)
    }

    fn deplete_answer(total: serde_json::Value) -> Response {
        axum::Json(json!({
            "message": "Deplete project operation executed",
            "data": {"total_amount": total}
        }))
        .into_response()
    }

    #[test]
    fn balances_are_parsed_exactly_from_strings_or_numbers() {
        let read = parse_balance(
            r#"{"message": "Balance for project", "data": {"proj_id": "x", "balance": "145.50", "reservation": 2}}"#,
        )
        .unwrap();
        assert_eq!(read.balance, Decimal::new(14550, 2));
        assert_eq!(read.reservation, Decimal::from(2));
        assert!(parse_balance(r#"{"data": {"balance": "1.00"}}"#).is_err());
        assert!(parse_balance("not json").is_err());
    }

    #[test]
    fn total_amounts_are_parsed_exactly() {
        let parse = |total: &str| {
            parse_total_amount(&format!(
                r#"{{"message":"ok","data":{{"total_amount":{total}}}}}"#
            ))
        };
        assert_eq!(parse(r#""200.00""#), Ok(Decimal::new(20000, 2)));
        assert_eq!(parse(r#""0.00""#), Ok(Decimal::ZERO));
        assert_eq!(parse(r#""1234.5""#), Ok(Decimal::new(12345, 1)));
        assert_eq!(parse("12.25"), Ok(Decimal::new(1225, 2)));
        assert_eq!(parse("0.1"), Ok(Decimal::new(1, 1)));
        assert_eq!(parse("350"), Ok(Decimal::new(350, 0)));
        assert!(parse(r#""lots""#).is_err());
        assert!(parse("null").is_err());
        assert!(parse_total_amount(r#"{"message":"ok","data":null}"#).is_err());
    }

    #[test]
    fn lab_balances_parse_exactly_with_their_projects() {
        let (lab, project) = (Uuid::new_v4(), Uuid::new_v4());
        let parsed = parse_vlab_balance(&format!(
            r#"{{"message": "m", "data": {{"vlab_id": "{lab}", "balance": "10.00",
                "projects": [{{"proj_id": "{project}", "balance": 179.5, "reservation": "2.25"}}]}}}}"#
        ))
        .unwrap();
        assert_eq!(parsed.balance, Decimal::new(1000, 2));
        assert_eq!(
            parsed.projects.get(&project),
            Some(&ProjectBalance {
                balance: Decimal::new(1795, 1),
                reservation: Decimal::new(225, 2),
            })
        );
        // No projects listed: none known.
        let bare = parse_vlab_balance(r#"{"data": {"balance": "0.00"}}"#).unwrap();
        assert!(bare.projects.is_empty());
        for bad in [
            r#"{"data": {"balance": "x"}}"#.to_owned(),
            r#"{"data": {"projects": []}}"#.to_owned(),
            r#"{"data": {"balance": "1", "projects": [{"proj_id": "nope", "balance": "1"}]}}"#
                .to_owned(),
            "<html>".to_owned(),
        ] {
            assert!(parse_vlab_balance(&bad).is_err(), "{bad}");
        }
        assert!(parse_total_amount("<html>").is_err());
    }

    #[tokio::test]
    async fn deplete_project_returns_the_amount_moved() {
        for (total, expected) in [
            (json!("200.00"), Decimal::new(20000, 2)),
            (json!("0.00"), Decimal::ZERO),
            (json!("1234.5"), Decimal::new(12345, 1)),
            (json!(12.25), Decimal::new(1225, 2)),
        ] {
            let (acc, seen, _) =
                accounting(Duration::ZERO, move |_, _, _| deplete_answer(total.clone())).await;
            let project = Uuid::from_u128(5);
            assert_eq!(acc.deplete_project(project).await.unwrap(), expected);
            let calls = seen.lock().unwrap().clone();
            assert_eq!(calls[0].0, "/budget/deplete/project");
            assert_eq!(calls[0].1, "bearer token-1");
            let body: serde_json::Value = serde_json::from_str(&calls[0].2).unwrap();
            assert_eq!(body, json!({"proj_id": project}));
        }
    }

    #[tokio::test]
    async fn a_deplete_2xx_with_an_unreadable_body_is_uncertain() {
        let (acc, _, _) = accounting(Duration::ZERO, |_, _, _| "garbage".into_response()).await;
        let err = acc.deplete_project(Uuid::from_u128(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Decode {
                    operation: "acc_deplete_project",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Uncertain);
    }

    #[tokio::test]
    async fn the_accounting_error_body_is_parsed() {
        let (acc, _, _) = accounting(Duration::ZERO, |_, _, _| {
            (
                S::NOT_FOUND,
                axum::Json(json!({
                    "error_code": "ENTITY_NOT_FOUND",
                    "message": "Account not found",
                    "details": null
                })),
            )
                .into_response()
        })
        .await;
        let err = acc.grant(Uuid::from_u128(1), 200, None).await.unwrap_err();
        match &err {
            ClientError::Accounting {
                operation,
                status,
                error_code,
                message,
            } => {
                assert_eq!(*operation, "acc_grant");
                assert_eq!(*status, 404);
                assert_eq!(error_code, "ENTITY_NOT_FOUND");
                assert_eq!(message, "Account not found");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.class(), FailureClass::Definite);
    }

    #[tokio::test]
    async fn an_error_without_the_accounting_shape_is_a_status_error_and_not_retried() {
        let (acc, seen, _) = accounting(Duration::ZERO, |_, _, _| {
            (S::INTERNAL_SERVER_ERROR, "boom").into_response()
        })
        .await;
        let err = acc
            .create_vlab_account(Uuid::from_u128(1), "Lab", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Status { status: 500, body, .. } if body == "boom"),
            "{err:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_post_that_times_out_is_uncertain_and_sent_only_once() {
        let (acc, seen, _) =
            accounting(Duration::from_secs(3), |_, _, _| S::OK.into_response()).await;
        let err = acc.grant(Uuid::from_u128(1), 200, None).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    operation: "acc_grant"
                }
            ),
            "{err:?}"
        );
        assert!(err.is_uncertain());
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn requests_carry_the_documented_bodies() {
        let (acc, seen, _) = accounting(Duration::ZERO, |path, _, _| {
            if path.starts_with("/account/") {
                (
                    S::CREATED,
                    axum::Json(json!({"message": "created", "data": {}})),
                )
                    .into_response()
            } else {
                axum::Json(json!({"message": "done", "data": null})).into_response()
            }
        })
        .await;
        let (lab, project) = (Uuid::from_u128(10), Uuid::from_u128(20));
        let saga = Uuid::from_u128(30);
        let key = |seq| IdempotencyKey::saga_step(saga, seq);
        acc.create_vlab_account(lab, "Lab", Some(&key(3)))
            .await
            .unwrap();
        acc.create_project_account(project, lab, "Proj", Some(&key(5)))
            .await
            .unwrap();
        acc.grant(project, 200, Some(&key(6))).await.unwrap();
        acc.deplete_vlab(lab).await.unwrap();
        let calls = seen.lock().unwrap().clone();
        let paths: Vec<_> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/account/virtual-lab",
                "/account/project",
                "/budget/grant",
                "/budget/deplete/virtual-lab"
            ]
        );
        let body = |i: usize| serde_json::from_str::<serde_json::Value>(&calls[i].2).unwrap();
        assert_eq!(body(0), json!({"name": "Lab", "id": lab, "balance": "0"}));
        assert_eq!(
            body(1),
            json!({"name": "Proj", "id": project, "vlab_id": lab})
        );
        assert_eq!(body(3), json!({"vlab_id": lab}));
        let keys: Vec<_> = calls.iter().map(|c| c.3.as_str()).collect();
        let saga = saga.to_string();
        assert_eq!(
            keys,
            [
                format!("{saga}:3").as_str(),
                &format!("{saga}:5"),
                &format!("{saga}:6"),
                ""
            ]
        );
        // The amount is a JSON number with a fraction part.
        assert!(calls[2].2.contains(r#""amount":200.0"#), "{}", calls[2].2);
        assert!(calls[2].2.contains(&format!(r#""proj_id":"{project}""#)));
    }

    #[tokio::test]
    async fn a_401_refreshes_the_token_and_replays_once() {
        let (acc, seen, tokens) = accounting(Duration::ZERO, |_, auth, _| {
            if auth == "bearer token-1" {
                S::UNAUTHORIZED.into_response()
            } else {
                axum::Json(json!({"message": "done", "data": null})).into_response()
            }
        })
        .await;
        let key = IdempotencyKey::top_up(Uuid::from_u128(7));
        acc.grant(Uuid::from_u128(1), 50, Some(&key)).await.unwrap();
        let auths: Vec<_> = seen.lock().unwrap().iter().map(|c| c.1.clone()).collect();
        assert_eq!(auths, ["bearer token-1", "bearer token-2"]);
        // The replay is the same request: it carries the same key.
        let keys: Vec<_> = seen.lock().unwrap().iter().map(|c| c.3.clone()).collect();
        assert_eq!(keys, [key.as_str(), key.as_str()]);
        assert_eq!(*tokens.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_service_is_a_definite_connect_failure() {
        let kc = Router::new().route(
            "/realms/obp-realm/protocol/openid-connect/token",
            post(|| async { axum::Json(json!({"access_token": "t", "expires_in": 300})) }),
        );
        let cfg = config(&serve(kc).await, &closed_port().await);
        let out = outbound(Duration::from_secs(1));
        let acc = AccountingClient::new(out.clone(), ServiceToken::new(out, &cfg), &cfg);
        let err = acc.deplete_vlab(Uuid::from_u128(1)).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(err.class(), FailureClass::Definite);
    }

    #[tokio::test]
    async fn no_token_means_the_call_is_never_sent() {
        let cfg = config(&closed_port().await, "http://127.0.0.1:9");
        let out = outbound(Duration::from_secs(1));
        let acc = AccountingClient::new(out.clone(), ServiceToken::new(out, &cfg), &cfg);
        let err = acc.grant(Uuid::from_u128(1), 1, None).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Token {
                    operation: "acc_grant",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Definite);
    }
}
