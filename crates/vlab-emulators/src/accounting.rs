//! Accounting emulator: the credit ledger of integrations.md §3.
//!
//! It keeps virtual-lab and project accounts with exact decimal balances and books every move
//! against one system account. The five calls of §3.2 behave as described there (grant
//! creates credits, deplete moves whole balances back and answers the amount moved as a
//! 2-decimal string); top-up, assign and reverse are there for completeness. Requests are
//! JSON, every one needs a non-empty `Authorization: bearer …` (any scheme case); errors use
//! `{"error_code", "message", "details"}` with 400 / 404 / 422 / 500 as §3.1 says.
//!
//! Operation names: `acc_create_vlab_account`, `acc_create_project_account`, `acc_grant`,
//! `acc_deplete_project`, `acc_deplete_vlab`, `acc_top_up`, `acc_assign`, `acc_reverse`, and
//! `acc_project_balance` for `GET /balance/project/{proj_id}`, `acc_vlab_balance` for
//! `GET /balance/virtual-lab/{vlab_id}` (round2.md §1.9). `GET /_dev/balances` lists every
//! account; `POST /_dev/spend {"proj_id", "amount"}` spends a project's credits as a student's
//! jobs would (for `vlab-dev` demos).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::faults::{self, CallRecord, Control, Fault};
use crate::persist;
use crate::server::{self, Server};

/// How to start an [`AccountingEmulator`].
#[derive(Debug, Clone)]
pub struct AccountingOptions {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Load the accounts from this file at start and save them after each change.
    pub state_file: Option<PathBuf>,
}

impl Default for AccountingOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file: None,
        }
    }
}

/// One account as the ledger holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountInfo {
    pub id: Uuid,
    /// `virtual-lab` or `project`.
    pub kind: String,
    pub name: String,
    /// The parent lab of a project account.
    pub vlab_id: Option<Uuid>,
    pub balance: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    VirtualLab,
    Project,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualLab => "virtual-lab",
            Kind::Project => "project",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    id: Uuid,
    kind: Kind,
    name: String,
    vlab_id: Option<Uuid>,
    balance: Decimal,
}

/// The shape of `accounting.json` too.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// In creation order.
    accounts: Vec<Account>,
    /// The system account: credits created are taken from it, credits depleted go to it.
    system_balance: Decimal,
}

impl Ledger {
    fn get(&self, id: Uuid, kind: Kind) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id && a.kind == kind)
    }

    fn get_mut(&mut self, id: Uuid, kind: Kind) -> Result<&mut Account, ApiError> {
        self.accounts
            .iter_mut()
            .find(|a| a.id == id && a.kind == kind)
            .ok_or_else(account_not_found)
    }

    fn exists(&self, id: Uuid) -> bool {
        self.accounts.iter().any(|a| a.id == id)
    }

    /// Moves `amount` from one account to another (`None` = the system account).
    fn transfer(&mut self, from: Option<Uuid>, to: Option<Uuid>, amount: Decimal) {
        for (id, sign) in [(from, Decimal::NEGATIVE_ONE), (to, Decimal::ONE)] {
            match id {
                None => self.system_balance += sign * amount,
                Some(id) => {
                    if let Some(account) = self.accounts.iter_mut().find(|a| a.id == id) {
                        account.balance += sign * amount;
                    }
                }
            }
        }
    }

    /// A student's jobs using credits: project → system; the balance may go negative.
    fn spend(&mut self, proj_id: Uuid, amount: Decimal) -> Result<(), ApiError> {
        self.get_mut(proj_id, Kind::Project)?;
        self.transfer(Some(proj_id), None, amount);
        Ok(())
    }

    fn check_parent(&self, vlab_id: Uuid, proj_id: Uuid) -> Result<(), ApiError> {
        let lab = self.get(vlab_id, Kind::VirtualLab);
        let project = self.get(proj_id, Kind::Project);
        match (lab, project) {
            (Some(_), Some(p)) if p.vlab_id == Some(vlab_id) => Ok(()),
            (Some(_), Some(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "Project does not belong to the virtual lab",
            )),
            _ => Err(account_not_found()),
        }
    }
}

/// An error answer: `{"error_code", "message", "details"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// A request-validation error (422), with details in FastAPI's style.
    fn invalid(field: &str, msg: &str, kind: &str) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "INVALID_REQUEST",
            message: "Validation error".to_owned(),
            details: json!([{ "loc": ["body", field], "msg": msg, "type": kind }]),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({
                "error_code": self.code,
                "message": self.message,
                "details": self.details,
            })),
        )
            .into_response()
    }
}

fn account_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        "Account not found",
    )
}

fn insufficient_funds() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "INSUFFICIENT_FUNDS",
        "Insufficient funds",
    )
}

fn fault_body(status: StatusCode) -> Response {
    let code = if status == StatusCode::NOT_FOUND {
        "ENTITY_NOT_FOUND"
    } else {
        "INVALID_REQUEST"
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    ApiError::new(
        status,
        code,
        format!("Injected fault: HTTP {} {reason}", status.as_u16()),
    )
    .into_response()
}

/// Amounts in responses: a decimal string with 2 decimals.
fn money(amount: Decimal) -> String {
    format!(
        "{:.2}",
        amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    )
}

// --- Request fields -------------------------------------------------------------------------

fn uuid_field(body: &Map<String, Value>, name: &str) -> Result<Uuid, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(ApiError::invalid(name, "Field required", "missing")),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map_err(|_| ApiError::invalid(name, "Input should be a valid UUID", "uuid_parsing")),
        Some(_) => Err(ApiError::invalid(
            name,
            "UUID input should be a string",
            "uuid_type",
        )),
    }
}

fn string_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(ApiError::invalid(name, "Field required", "missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(
            name,
            "Input should be a valid string",
            "string_type",
        )),
    }
}

/// A JSON number or numeric string, read exactly (never through a binary float).
fn decimal_field(body: &Map<String, Value>, name: &str) -> Result<Option<Decimal>, ApiError> {
    let text = match body.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => {
            return Err(ApiError::invalid(
                name,
                "Input should be a valid decimal",
                "decimal_type",
            ));
        }
    };
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text)
    } else {
        Decimal::from_str(&text)
    };
    parsed
        .map(Some)
        .map_err(|_| ApiError::invalid(name, "Input should be a valid decimal", "decimal_parsing"))
}

fn positive_amount(body: &Map<String, Value>) -> Result<Decimal, ApiError> {
    match decimal_field(body, "amount")? {
        None => Err(ApiError::invalid("amount", "Field required", "missing")),
        Some(a) if a <= Decimal::ZERO => Err(ApiError::invalid(
            "amount",
            "Input should be greater than 0",
            "greater_than",
        )),
        Some(a) => Ok(a),
    }
}

// --- Operations -----------------------------------------------------------------------------

type Outcome = Result<(StatusCode, Value), ApiError>;

fn executed(message: &str, data: Value) -> Outcome {
    Ok((StatusCode::OK, json!({ "message": message, "data": data })))
}

fn duplicate(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INVALID_REQUEST",
        format!("Internal error: an account with id {id} already exists"),
    )
}

fn create_vlab_account(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let name = string_field(body, "name")?;
    let id = uuid_field(body, "id")?;
    let balance = decimal_field(body, "balance")?.unwrap_or_default();
    if balance < Decimal::ZERO {
        return Err(ApiError::invalid(
            "balance",
            "Input should be greater than or equal to 0",
            "greater_than_equal",
        ));
    }
    if ledger.exists(id) {
        return Err(duplicate(id));
    }
    ledger.accounts.push(Account {
        id,
        kind: Kind::VirtualLab,
        name: name.clone(),
        vlab_id: None,
        balance: Decimal::ZERO,
    });
    ledger.transfer(None, Some(id), balance);
    Ok((
        StatusCode::CREATED,
        json!({
            "message": "Virtual lab created",
            "data": {"id": id, "name": name, "balance": money(balance)},
        }),
    ))
}

fn create_project_account(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let name = string_field(body, "name")?;
    let id = uuid_field(body, "id")?;
    let vlab_id = uuid_field(body, "vlab_id")?;
    if ledger.get(vlab_id, Kind::VirtualLab).is_none() {
        return Err(account_not_found());
    }
    if ledger.exists(id) {
        return Err(duplicate(id));
    }
    ledger.accounts.push(Account {
        id,
        kind: Kind::Project,
        name: name.clone(),
        vlab_id: Some(vlab_id),
        balance: Decimal::ZERO,
    });
    Ok((
        StatusCode::CREATED,
        json!({"message": "Project created", "data": {"id": id, "name": name}}),
    ))
}

/// New credits: system → lab (top-up) and lab → project (assign) in one step.
fn grant(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let proj_id = uuid_field(body, "proj_id")?;
    let amount = positive_amount(body)?;
    let vlab_id = ledger
        .get_mut(proj_id, Kind::Project)?
        .vlab_id
        .ok_or_else(account_not_found)?;
    ledger.transfer(None, Some(vlab_id), amount);
    ledger.transfer(Some(vlab_id), Some(proj_id), amount);
    executed("Grant budget operation executed", Value::Null)
}

/// Moves the whole (positive) balance of one account to the system account.
fn deplete(ledger: &mut Ledger, id: Uuid, kind: Kind) -> Result<Decimal, ApiError> {
    let balance = ledger.get_mut(id, kind)?.balance;
    let moved = balance.max(Decimal::ZERO);
    ledger.transfer(Some(id), None, moved);
    Ok(moved)
}

fn deplete_project(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let proj_id = uuid_field(body, "proj_id")?;
    let total = deplete(ledger, proj_id, Kind::Project)?;
    executed(
        "Deplete project operation executed",
        json!({"total_amount": money(total)}),
    )
}

fn deplete_vlab(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let vlab_id = uuid_field(body, "vlab_id")?;
    ledger.get_mut(vlab_id, Kind::VirtualLab)?;
    let projects: Vec<Uuid> = ledger
        .accounts
        .iter()
        .filter(|a| a.kind == Kind::Project && a.vlab_id == Some(vlab_id))
        .map(|a| a.id)
        .collect();
    let mut total = Decimal::ZERO;
    for id in projects {
        total += deplete(ledger, id, Kind::Project)?;
    }
    total += deplete(ledger, vlab_id, Kind::VirtualLab)?;
    executed(
        "Deplete virtual lab operation executed",
        json!({"total_amount": money(total)}),
    )
}

fn top_up(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let vlab_id = uuid_field(body, "vlab_id")?;
    let amount = positive_amount(body)?;
    ledger.get_mut(vlab_id, Kind::VirtualLab)?;
    ledger.transfer(None, Some(vlab_id), amount);
    executed("Top-up operation executed", Value::Null)
}

fn assign(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let vlab_id = uuid_field(body, "vlab_id")?;
    let proj_id = uuid_field(body, "proj_id")?;
    let amount = positive_amount(body)?;
    ledger.check_parent(vlab_id, proj_id)?;
    if ledger.get_mut(vlab_id, Kind::VirtualLab)?.balance < amount {
        return Err(insufficient_funds());
    }
    ledger.transfer(Some(vlab_id), Some(proj_id), amount);
    executed("Assign budget operation executed", Value::Null)
}

fn reverse(ledger: &mut Ledger, body: &Map<String, Value>) -> Outcome {
    let vlab_id = uuid_field(body, "vlab_id")?;
    let proj_id = uuid_field(body, "proj_id")?;
    let amount = positive_amount(body)?;
    ledger.check_parent(vlab_id, proj_id)?;
    if ledger.get_mut(proj_id, Kind::Project)?.balance < amount {
        return Err(insufficient_funds());
    }
    ledger.transfer(Some(proj_id), Some(vlab_id), amount);
    executed("Reverse budget operation executed", Value::Null)
}

// --- Server ---------------------------------------------------------------------------------

struct Acc {
    ledger: Mutex<Ledger>,
    state_file: Option<PathBuf>,
    control: Arc<Control>,
}

impl Acc {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Plain data: a panic elsewhere cannot leave it in a state that matters here.
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, ledger: &Ledger) {
        persist::save_or_warn(self.state_file.as_deref(), ledger);
    }
}

/// A non-empty `Authorization: bearer <token>`; the scheme in any case.
fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
        })
}

type Operation = fn(&mut Ledger, &Map<String, Value>) -> Outcome;

/// A `POST` route running `operation` on the JSON object body.
fn json_post(operation: Operation) -> MethodRouter<Arc<Acc>> {
    post(
        move |State(acc): State<Arc<Acc>>, headers: HeaderMap, body: Bytes| async move {
            if !authorized(&headers) {
                return not_authenticated().into_response();
            }
            let body = match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return ApiError {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: "INVALID_REQUEST",
                        message: "Validation error".to_owned(),
                        details: json!([{
                            "loc": ["body"],
                            "msg": "Input should be a valid JSON object",
                            "type": "json_invalid",
                        }]),
                    }
                    .into_response();
                }
            };
            let mut ledger = acc.ledger();
            match operation(&mut ledger, &body) {
                Ok((status, body)) => {
                    acc.save(&ledger);
                    (status, axum::Json(body)).into_response()
                }
                Err(e) => e.into_response(),
            }
        },
    )
}

fn info(account: &Account) -> AccountInfo {
    AccountInfo {
        id: account.id,
        kind: account.kind.as_str().to_owned(),
        name: account.name.clone(),
        vlab_id: account.vlab_id,
        balance: account.balance,
    }
}

async fn dev_balances(State(acc): State<Arc<Acc>>) -> axum::Json<Value> {
    let ledger = acc.ledger();
    let mut list: Vec<Value> = ledger
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "kind": a.kind.as_str(),
                "name": a.name,
                "vlab_id": a.vlab_id,
                "balance": money(a.balance),
            })
        })
        .collect();
    list.push(json!({
        "id": null,
        "kind": "system",
        "name": "system",
        "vlab_id": null,
        "balance": money(ledger.system_balance),
    }));
    axum::Json(Value::Array(list))
}

/// `GET /balance/project/{proj_id}`: the project's balance; no job reservations are modelled.
async fn project_balance(
    State(acc): State<Arc<Acc>>,
    headers: HeaderMap,
    Path(proj_id): Path<String>,
) -> Response {
    if !authorized(&headers) {
        return not_authenticated().into_response();
    }
    let ledger = acc.ledger();
    let account = Uuid::from_str(&proj_id)
        .ok()
        .and_then(|id| ledger.get(id, Kind::Project));
    match account {
        Some(account) => axum::Json(json!({
            "message": "Balance for project",
            "data": {
                "proj_id": account.id,
                "balance": money(account.balance),
                "reservation": money(Decimal::ZERO),
            },
        }))
        .into_response(),
        None => account_not_found().into_response(),
    }
}

/// The answer to a request without a usable token.
fn not_authenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_REQUEST",
        "Not authenticated",
    )
}

/// `GET /balance/virtual-lab/{vlab_id}[?include_projects=true]`: the lab's balance and, when
/// asked, each of its projects' (no job reservations are modelled: `reservation` is 0).
async fn vlab_balance(
    State(acc): State<Arc<Acc>>,
    headers: HeaderMap,
    Path(vlab_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !authorized(&headers) {
        return not_authenticated().into_response();
    }
    let ledger = acc.ledger();
    let Some(lab) = Uuid::from_str(&vlab_id)
        .ok()
        .and_then(|id| ledger.get(id, Kind::VirtualLab))
    else {
        return account_not_found().into_response();
    };
    let include_projects = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.eq_ignore_ascii_case("include_projects=true"));
    let mut data = json!({"vlab_id": lab.id, "balance": money(lab.balance)});
    let message = if include_projects {
        let projects: Vec<Value> = ledger
            .accounts
            .iter()
            .filter(|a| a.kind == Kind::Project && a.vlab_id == Some(lab.id))
            .map(|a| {
                json!({"proj_id": a.id, "balance": money(a.balance),
                       "reservation": money(Decimal::ZERO)})
            })
            .collect();
        data["projects"] = Value::Array(projects);
        "Balance for virtual-lab including projects"
    } else {
        "Balance for virtual-lab"
    };
    axum::Json(json!({"message": message, "data": data})).into_response()
}

/// `POST /_dev/spend {"proj_id", "amount"}`: spends a project's credits (no token needed, as
/// for the other `/_dev` routes).
async fn dev_spend(State(acc): State<Arc<Acc>>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return ApiError::invalid(
            "body",
            "Input should be a valid JSON object",
            "json_invalid",
        )
        .into_response();
    };
    let spent = uuid_field(&body, "proj_id").and_then(|proj_id| {
        let amount = positive_amount(&body)?;
        let mut ledger = acc.ledger();
        ledger.spend(proj_id, amount)?;
        acc.save(&ledger);
        let balance = ledger.get(proj_id, Kind::Project).map(|a| a.balance);
        Ok(json!({"proj_id": proj_id, "balance": balance.map(money)}))
    });
    match spent {
        Ok(data) => axum::Json(json!({"message": "Spent", "data": data})).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"detail": "Not Found"})),
    )
        .into_response()
}

fn router(acc: Arc<Acc>) -> Router {
    let control = acc.control.clone();
    let op = |operation: Operation, name| {
        server::operation(json_post(operation), &control, name, fault_body)
    };
    Router::new()
        .route(
            "/account/virtual-lab",
            op(create_vlab_account, "acc_create_vlab_account"),
        )
        .route(
            "/account/project",
            op(create_project_account, "acc_create_project_account"),
        )
        .route("/budget/grant", op(grant, "acc_grant"))
        .route(
            "/budget/deplete/project",
            op(deplete_project, "acc_deplete_project"),
        )
        .route(
            "/budget/deplete/virtual-lab",
            op(deplete_vlab, "acc_deplete_vlab"),
        )
        .route("/budget/top-up", op(top_up, "acc_top_up"))
        .route("/budget/assign", op(assign, "acc_assign"))
        .route("/budget/reverse", op(reverse, "acc_reverse"))
        .route(
            "/balance/project/{proj_id}",
            server::operation(
                get(project_balance),
                &control,
                "acc_project_balance",
                fault_body,
            ),
        )
        .route(
            "/balance/virtual-lab/{vlab_id}",
            server::operation(get(vlab_balance), &control, "acc_vlab_balance", fault_body),
        )
        .route("/_dev/balances", get(dev_balances))
        .route("/_dev/spend", post(dev_spend))
        .fallback(not_found)
        .with_state(acc)
        .merge(faults::dev_routes(control.clone(), 500))
}

struct Inner {
    server: Server,
    acc: Arc<Acc>,
}

/// A running accounting emulator. Clones share it; it stops on [`shutdown`](Self::shutdown)
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct AccountingEmulator {
    inner: Arc<Inner>,
}

impl AccountingEmulator {
    /// Binds `opts.bind`, loads the ledger from `state_file` if it exists, and starts serving.
    pub async fn start(opts: AccountingOptions) -> anyhow::Result<Self> {
        let ledger = match &opts.state_file {
            Some(path) => persist::load::<Ledger>(path)?.unwrap_or_default(),
            None => Ledger::default(),
        };
        let listener = server::listen(opts.bind).await?;
        let acc = Arc::new(Acc {
            ledger: Mutex::new(ledger),
            state_file: opts.state_file,
            control: Arc::new(Control::default()),
        });
        acc.save(&acc.ledger());
        let server = Server::start_http(listener, router(acc.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner { server, acc }),
        })
    }

    fn acc(&self) -> &Acc {
        &self.inner.acc
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.server.addr())
    }

    /// The balance of a lab or project account.
    pub fn balance(&self, account_id: Uuid) -> Option<Decimal> {
        self.acc()
            .ledger()
            .accounts
            .iter()
            .find(|a| a.id == account_id)
            .map(|a| a.balance)
    }

    /// The system account's balance: minus the credits in circulation.
    pub fn system_balance(&self) -> Decimal {
        self.acc().ledger().system_balance
    }

    pub fn account_exists(&self, id: Uuid) -> bool {
        self.acc().ledger().exists(id)
    }

    /// Every account, in creation order.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        self.acc().ledger().accounts.iter().map(info).collect()
    }

    /// Simulates a student using credits: moves `amount` from the project to the system
    /// account. The balance may go negative, as usage can make it.
    pub fn spend(&self, project_id: Uuid, amount: Decimal) -> anyhow::Result<()> {
        if amount < Decimal::ZERO {
            bail!("cannot spend a negative amount ({amount})");
        }
        let acc = self.acc();
        let mut ledger = acc.ledger();
        if ledger.spend(project_id, amount).is_err() {
            bail!("no project account {project_id}");
        }
        acc.save(&ledger);
        Ok(())
    }

    /// Every call of a named operation so far, in arrival order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.acc().control.calls()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.acc().control.call_count(operation)
    }

    pub fn inject(&self, fault: Fault) {
        self.acc().control.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.acc().control.clear_faults();
    }

    /// Delay every call by `d` before handling it (added to any operation latency).
    pub fn set_latency(&self, d: Duration) {
        self.acc().control.set_latency(d);
    }

    /// Delay the calls of one operation by `d` before handling them; zero removes it.
    pub fn set_operation_latency(&self, operation: &str, d: Duration) {
        self.acc().control.set_operation_latency(operation, d);
    }

    /// Stops serving and closes every connection, including stalled ones.
    pub async fn shutdown(&self) {
        self.inner.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn amounts_are_read_exactly_and_answered_with_two_decimals() {
        let b = body(json!({"a": 0.1, "b": "12.345", "c": 1e2, "d": 200}));
        assert_eq!(
            decimal_field(&b, "a").unwrap(),
            Some(Decimal::from_str("0.1").unwrap())
        );
        assert_eq!(money(decimal_field(&b, "b").unwrap().unwrap()), "12.35");
        assert_eq!(money(decimal_field(&b, "c").unwrap().unwrap()), "100.00");
        assert_eq!(money(decimal_field(&b, "d").unwrap().unwrap()), "200.00");
        assert!(decimal_field(&body(json!({"a": "x"})), "a").is_err());
    }

    #[test]
    fn deplete_lab_collects_positive_project_balances_and_the_lab() {
        let mut ledger = Ledger::default();
        let lab = Uuid::new_v4();
        let (p1, p2) = (Uuid::new_v4(), Uuid::new_v4());
        create_vlab_account(
            &mut ledger,
            &body(json!({"name": "L", "id": lab, "balance": "0"})),
        )
        .unwrap();
        for p in [p1, p2] {
            create_project_account(
                &mut ledger,
                &body(json!({"name": "P", "id": p, "vlab_id": lab})),
            )
            .unwrap();
        }
        grant(&mut ledger, &body(json!({"proj_id": p1, "amount": 200.5}))).unwrap();
        top_up(&mut ledger, &body(json!({"vlab_id": lab, "amount": 50}))).unwrap();
        ledger.transfer(Some(p2), None, Decimal::from(10));
        let (_, answer) = deplete_vlab(&mut ledger, &body(json!({"vlab_id": lab}))).unwrap();
        assert_eq!(answer["data"]["total_amount"], "250.50");
        assert_eq!(
            ledger.get(p1, Kind::Project).unwrap().balance,
            Decimal::ZERO
        );
        assert_eq!(
            ledger.get(p2, Kind::Project).unwrap().balance,
            Decimal::from(-10)
        );
        assert_eq!(ledger.system_balance, Decimal::from(10));
    }
}
