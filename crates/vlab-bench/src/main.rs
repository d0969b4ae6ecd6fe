//! `vlab-bench`: the benchmark figures — assign, drop, roster import, expiry and read
//! throughput, and the server's peak memory — measured against the release build with latency-injected emulators.
//!
//! Run from the repository root (it builds the release binaries first):
//! `cargo run --release -p vlab-bench`. Not part of the test suite.

mod api;
mod load;
mod stack;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use api::Api;
use stack::Stack;

#[derive(Parser, Debug)]
#[command(
    name = "vlab-bench",
    about = "Benchmarks of vlab-courses (release build, emulators with injected latency)"
)]
struct Cli {
    /// PostgreSQL server to create the throwaway benchmark database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Latency of every Keycloak and accounting call, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// EXTERNAL_CONCURRENCY of the server and the job.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Courses and students per course of the expiry scenario.
    #[arg(long, default_value_t = 50)]
    expiry_courses: usize,
    #[arg(long, default_value_t = 40)]
    expiry_students: usize,
    /// Seconds of each read-load run.
    #[arg(long, default_value_t = 10)]
    read_seconds: u64,
    /// Skip `cargo build --release -p vlab-courses --bins` (the binaries are already built).
    #[arg(long)]
    no_build: bool,
    /// Run only these scenarios (comma-separated): assign (with drop), roster-import,
    /// assign-before-start, expiry, reads, memory, recovery. All of them when absent.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Cli {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

struct Row {
    scenario: String,
    measured: String,
    target: String,
    limit: String,
    met: Option<bool>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !cli.no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "vlab-courses", "--bins"])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("building the release binaries failed");
        }
    }
    let mut stack = Stack::start(&cli.database_url, cli.concurrency).await?;
    let mut result = run(&cli, &stack).await;
    // Last: it kills and restarts the server.
    if cli.wants("recovery")
        && let Ok(rows) = &mut result
    {
        match recovery(&cli, &mut stack).await {
            Ok(row) => rows.push(row),
            Err(err) => result = Err(err),
        }
    }
    stack.stop().await?;
    let rows = result?;
    print_table(&cli, &rows);
    Ok(())
}

/// Samples the server's resident memory until dropped, keeping the maximum (in KiB).
struct MemorySampler {
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    fn start(pid: Option<u32>) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { peak_kib, task }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// The peak since the last call, then starts over.
    fn take_peak_mib(&self) -> f64 {
        self.peak_kib.swap(0, Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn run(cli: &Cli, stack: &Stack) -> anyhow::Result<Vec<Row>> {
    let api = Api::new(stack)?;
    let latency = Duration::from_millis(cli.latency_ms);
    let c = cli.concurrency as f64;
    let l = latency.as_secs_f64();
    let mut rows = Vec::new();
    let sampler = MemorySampler::start(stack.server_pid());
    let mut overall_peak: f64 = 0.0;
    let mut phase_peak = |phase: &str, sampler: &MemorySampler| {
        let peak = sampler.take_peak_mib();
        overall_peak = overall_peak.max(peak);
        eprintln!("peak RSS during {phase}: {peak:.1} MiB");
    };

    // Assign: per student 4 round trips on the critical path (groups, memberships, account,
    // grant), `concurrency` students at once; plus one lab-admin listing.
    let assigns: &[(usize, f64)] = if cli.wants("assign") {
        &[(200, 1.2), (1000, 6.0)]
    } else {
        &[]
    };
    for &(n, target) in assigns {
        let course = api.active_course(&format!("Bench assign {n}"), n).await?;
        let before = stack.server_memory().map(|m| m.0).unwrap_or(0.0);
        stack.set_latency(latency);
        let started = Instant::now();
        let (seats, ok) = api.assign(&course, &format!("a{n}"), n).await?;
        let took = started.elapsed();
        stack.set_latency(Duration::ZERO);
        let after = stack.server_memory().map(|m| m.0).unwrap_or(0.0);
        if n == 200 {
            print_call_profile(&api).await;
        }
        if ok != n {
            bail!("assign {n}: only {ok} students succeeded");
        }
        let limit = (1.0 + n as f64 * 4.0 / c) * l;
        rows.push(Row {
            scenario: format!(
                "assign {n} students, {} ms latency, concurrency {}",
                cli.latency_ms, cli.concurrency
            ),
            measured: secs(took),
            target: format!("≤ {target:.1} s"),
            limit: format!(
                "{limit:.2} s = (1 + {n}×4 RT ÷ {c}) × {} ms",
                cli.latency_ms
            ),
            met: Some(took.as_secs_f64() <= target),
        });
        phase_peak(&format!("assign {n}"), &sampler);
        if n == 1000 {
            rows.push(Row {
                scenario: "  memory across the 1000-student assign".to_owned(),
                measured: format!("RSS {before:.1} → {after:.1} MiB"),
                target: "flat".to_owned(),
                limit: "—".to_owned(),
                met: None,
            });
        }
        if n == 200 {
            // Drop: per seat 2 round trips (deplete, list the project's members).
            let to_drop: Vec<String> = seats.into_iter().take(100).collect();
            stack.set_latency(latency);
            let started = Instant::now();
            let dropped = api.drop_seats(&course, &to_drop).await?;
            let took = started.elapsed();
            stack.set_latency(Duration::ZERO);
            if dropped != 100 {
                bail!("drop 100: only {dropped} dropped");
            }
            let limit = 100.0 * 2.0 / c * l;
            rows.push(Row {
                scenario: format!("drop 100 seats, {} ms latency", cli.latency_ms),
                measured: secs(took),
                target: "≤ 0.8 s".to_owned(),
                limit: format!("{limit:.2} s = 100×2 RT ÷ {c} × {} ms", cli.latency_ms),
                met: Some(took.as_secs_f64() <= 0.8),
            });
        }
    }

    if cli.wants("roster-import") {
        rows.extend(roster_import(cli, stack, &api, latency).await?);
        phase_peak("roster import 1000", &sampler);
    }
    if cli.wants("assign-before-start") {
        rows.push(assign_before_the_start(cli, stack, &api, latency).await?);
        phase_peak("assign 200 before the start", &sampler);
    }
    if cli.wants("expiry") {
        rows.extend(expiry(cli, stack, &api, latency).await?);
        phase_peak("expiry (set-up and run)", &sampler);
    }
    if cli.wants("reads") {
        rows.extend(reads(cli, stack, &api).await?);
        phase_peak("reads", &sampler);
    }
    if !cli.wants("memory") {
        return Ok(rows);
    }
    if let Some(pid) = stack.server_pid()
        && let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
    {
        let wanted = [
            "Rss:",
            "Anonymous:",
            "Shared_Clean:",
            "Private_Clean:",
            "Private_Dirty:",
        ];
        let parts: Vec<&str> = rollup
            .lines()
            .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
            .collect();
        eprintln!(
            "server memory at the end: {}",
            parts
                .join(" | ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    let peak = overall_peak.max(sampler.peak_mib());
    let hwm = stack.server_memory().map(|m| m.1).unwrap_or(0.0);
    rows.push(Row {
        scenario: "peak RSS of the server during the runs".to_owned(),
        measured: format!("{peak:.1} MiB (VmHWM {hwm:.1} MiB)"),
        target: "≤ 40 MB".to_owned(),
        limit: "—".to_owned(),
        met: Some(hwm * 1.048_576 <= 40.0),
    });
    Ok(rows)
}

/// The saga recovery: a `kill -9` of the server while `concurrency` students of an assign are
/// in flight (Keycloak slowed so they are caught mid-way), their leases made to lapse, then the
/// time from the restart to every saga compensated (the restarted server's first worker pass).
async fn recovery(cli: &Cli, stack: &mut Stack) -> anyhow::Result<Row> {
    let in_flight = cli.concurrency;
    let course = Api::new(stack)?
        .active_course("Bench recovery", in_flight * 4)
        .await?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&stack.database_url)
        .await?;
    let count = async |sql: &str| -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&db).await?)
    };
    stack.keycloak.set_latency(Duration::from_millis(500));
    let students: Vec<serde_json::Value> = (0..in_flight * 4)
        .map(|i| serde_json::json!({"student_id": format!("k-{i}"), "email": format!("k-{i}@uni.example.org")}))
        .collect();
    let request = reqwest::Client::new()
        .post(format!("{}/seats/courses/{}/assign", stack.api, course.id))
        .bearer_auth(&course.faculty_token)
        .json(&serde_json::json!({ "students": students }))
        .send();
    let assign = tokio::spawn(request);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("SELECT count(*) FROM saga WHERE state = 'running'").await? < in_flight as i64 {
        if Instant::now() > deadline {
            bail!("recovery: the students never got in flight");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.kill_server().await?;
    assign.abort();
    let abandoned = count("SELECT count(*) FROM saga WHERE state = 'running'").await?;
    // The 5-minute lease would lapse by itself; the figure is what follows it.
    sqlx::query(
        "UPDATE saga SET lease_until = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(&db)
    .await?;
    stack.set_latency(Duration::from_millis(cli.latency_ms));
    let started = Instant::now();
    stack.restart_server().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count("SELECT count(*) FROM saga WHERE state <> 'compensated'").await? > 0 {
        if Instant::now() > deadline {
            bail!("recovery: sagas still open after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    stack.set_latency(Duration::ZERO);
    let reserved = count(&format!(
        "SELECT count(*) FROM seat WHERE course_id = '{}' AND reservation_id IS NOT NULL
           AND enrolment_id IS NULL",
        course.id
    ))
    .await?;
    if reserved > 0 {
        bail!("recovery: {reserved} seats still reserved");
    }
    db.close().await;
    Ok(Row {
        scenario: format!(
            "recovery: restart → {abandoned} in-flight students compensated (kill -9), {} ms latency",
            cli.latency_ms
        ),
        measured: secs(took),
        target: "report".to_owned(),
        limit: "restart + 1 worker pass".to_owned(),
        met: None,
    })
}

/// Assign 200 to a course that starts tomorrow: each student's project also gets its waitlisted
/// group (W.5.2), created together with the other two, so the critical path stays 4 round trips.
async fn assign_before_the_start(
    cli: &Cli,
    stack: &Stack,
    api: &Api<'_>,
    latency: Duration,
) -> anyhow::Result<Row> {
    let n = 200usize;
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    let course = api
        .active_course_from("Bench assign before the start", n, start)
        .await?;
    stack.set_latency(latency);
    let started = Instant::now();
    let (_, ok) = api.assign(&course, "w200", n).await?;
    let took = started.elapsed();
    stack.set_latency(Duration::ZERO);
    if ok != n {
        bail!("assign {n} before the start: only {ok} students succeeded");
    }
    let (c, l) = (cli.concurrency as f64, latency.as_secs_f64());
    let limit = (1.0 + n as f64 * 4.0 / c) * l;
    Ok(Row {
        scenario: format!(
            "assign {n} students before the start (3 groups each), {} ms latency",
            cli.latency_ms
        ),
        measured: secs(took),
        target: "≤ 1.2 s".to_owned(),
        limit: format!(
            "{limit:.2} s = (1 + {n}×4 RT ÷ {c}) × {} ms",
            cli.latency_ms
        ),
        met: Some(took.as_secs_f64() <= 1.2),
    })
}

/// A CSV roster of 1000 students: the dry run (one read, no upstream call), then the real run,
/// which is assign 1000 behind one CSV parse and the partial-mode reservation.
async fn roster_import(
    cli: &Cli,
    stack: &Stack,
    api: &Api<'_>,
    latency: Duration,
) -> anyhow::Result<Vec<Row>> {
    let n = 1000usize;
    let course = api.active_course("Bench roster import", n).await?;
    stack.set_latency(latency);
    let started = Instant::now();
    let dry = api.roster_import(&course, "i", n, true).await?;
    let dry_took = started.elapsed();
    let started = Instant::now();
    let real = api.roster_import(&course, "i", n, false).await?;
    let took = started.elapsed();
    stack.set_latency(Duration::ZERO);
    if dry["would_assign"] != n || real["assigned"] != n {
        bail!("roster import {n}: dry run {dry}, real run {real}");
    }
    let (c, l) = (cli.concurrency as f64, latency.as_secs_f64());
    let limit = (1.0 + n as f64 * 4.0 / c) * l;
    Ok(vec![
        Row {
            scenario: format!("roster import {n} rows, dry run"),
            measured: secs(dry_took),
            target: "≤ 0.5 s".to_owned(),
            limit: "no upstream call".to_owned(),
            met: Some(dry_took.as_secs_f64() <= 0.5),
        },
        Row {
            scenario: format!(
                "roster import {n} rows, real run, {} ms latency, concurrency {}",
                cli.latency_ms, cli.concurrency
            ),
            measured: secs(took),
            target: "≤ 6.0 s (as assign 1000)".to_owned(),
            limit: format!(
                "{limit:.2} s = (1 + {n}×4 RT ÷ {c}) × {} ms",
                cli.latency_ms
            ),
            met: Some(took.as_secs_f64() <= 6.0),
        },
    ])
}

/// `expire-courses` over ended courses: courses one after another, each dropping its students
/// `concurrency` at once (2 round trips each) and depleting its lab (1 round trip).
async fn expiry(
    cli: &Cli,
    stack: &Stack,
    api: &Api<'_>,
    latency: Duration,
) -> anyhow::Result<Vec<Row>> {
    let (courses, students) = (cli.expiry_courses, cli.expiry_students);
    let mut ids = Vec::new();
    for i in 0..courses {
        let course = api
            .active_course(&format!("Bench expiry {i}"), students)
            .await?;
        let (_, ok) = api.assign(&course, &format!("e{i}"), students).await?;
        if ok != students {
            bail!("expiry set-up: course {i} got {ok} students");
        }
        ids.push(course.id);
    }
    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let notices = expiry_with_notices(cli, stack, &pool, &ids, latency).await?;
    sqlx::query(
        "UPDATE course SET start_date = now() - interval '10 days',
                last_drop_date = now() - interval '5 days', end_date = now() - interval '1 hour'
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&pool)
    .await?;
    pool.close().await;

    stack.set_latency(latency);
    let started = Instant::now();
    let output = tokio::process::Command::new(stack::sibling_binary("expire-courses")?)
        .env_clear()
        .envs(&stack.vars)
        .output()
        .await?;
    let took = started.elapsed();
    stack.set_latency(Duration::ZERO);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "expire-courses printed: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let dropped = summary["enrolments_dropped"].as_u64().unwrap_or(0);
    if dropped != (courses * students) as u64 {
        bail!(
            "expire-courses dropped {dropped} of {}: {summary}",
            courses * students
        );
    }
    let per_course = (students as f64 * 2.0 / cli.concurrency as f64).ceil() + 1.0;
    let limit = courses as f64 * per_course * latency.as_secs_f64();
    Ok(vec![
        notices,
        Row {
            scenario: format!(
                "expire-courses, {courses} ended courses × {students} students, {} ms latency",
                cli.latency_ms
            ),
            measured: secs(took),
            target: "≤ 10 s".to_owned(),
            limit: format!(
                "{limit:.2} s = {courses} × (⌈{students}×2 RT ÷ {}⌉ + 1 RT) × {} ms",
                cli.concurrency, cli.latency_ms
            ),
            met: Some(took.as_secs_f64() <= 10.0),
        },
    ])
}

/// The same courses before they end, with every pre-expiry notice due: each course's last
/// drop date and end date inside the lead times and every student claimed (by SQL, with the
/// access sync held back, both undone afterwards so the expiry run itself is unchanged). The
/// job then lists each lab's admins and reads its balances once, queues the notices and sends
/// them in its e-mail pass; no course expires. Reported, without a target.
async fn expiry_with_notices(
    cli: &Cli,
    stack: &Stack,
    pool: &sqlx::PgPool,
    ids: &[uuid::Uuid],
    latency: Duration,
) -> anyhow::Result<Row> {
    let (courses, students) = (cli.expiry_courses, cli.expiry_students);
    sqlx::query(
        "UPDATE course SET last_drop_date = now() + interval '5 days',
                end_date = now() + interval '20 days'
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    sqlx::query(
        "UPDATE course_enrolment SET claimed_by = gen_random_uuid(),
                access_next_attempt_at = now() + interval '1 day'
         WHERE course_id = ANY($1)",
    )
    .bind(ids)
    .execute(pool)
    .await?;

    stack.set_latency(latency);
    let started = Instant::now();
    let output = tokio::process::Command::new(stack::sibling_binary("expire-courses")?)
        .env_clear()
        .envs(&stack.vars)
        .env("FACULTY_DROP_DEADLINE_NOTICE_DAYS", "10")
        .env("FACULTY_END_NOTICE_DAYS", "30")
        .env("STUDENT_END_NOTICE_DAYS", "30")
        .output()
        .await?;
    let took = started.elapsed();
    stack.set_latency(Duration::ZERO);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "expire-courses with notices printed: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let queued = summary["notices_queued"].as_u64().unwrap_or(0);
    let sent = summary["emails_sent"].as_u64().unwrap_or(0);
    if queued < (courses * students) as u64 || summary["notices_failed"] != 0 {
        bail!("expire-courses queued {queued} notices: {summary}");
    }

    sqlx::query(
        "UPDATE course_enrolment SET claimed_by = NULL, access_next_attempt_at = NULL
         WHERE course_id = ANY($1)",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(Row {
        scenario: format!(
            "expire-courses with notices on, {courses} courses × {students} claimed students \
             ({queued} notices queued, {sent} sent), {} ms latency",
            cli.latency_ms
        ),
        measured: secs(took),
        target: "reported".to_owned(),
        limit: format!(
            "{courses} × 2 RT (admins, balances) × {} ms + the e-mails",
            cli.latency_ms
        ),
        met: None,
    })
}

/// Read endpoints with a cached token (no emulator latency: the groups cache answers).
async fn reads(cli: &Cli, stack: &Stack, api: &Api<'_>) -> anyhow::Result<Vec<Row>> {
    let course = api.active_course("Bench reads", 100).await?;
    api.assign(&course, "r", 100).await?;
    let duration = Duration::from_secs(cli.read_seconds);
    let mut rows = Vec::new();
    for (label, path, token) in [
        (
            "GET /courses/{id}",
            format!("/courses/{}", course.id),
            api.admin_token().to_owned(),
        ),
        (
            "GET /seats/courses/{id} (100 seats)",
            format!("/seats/courses/{}", course.id),
            course.faculty_token.clone(),
        ),
    ] {
        let url = format!("{}{path}", stack.api);
        // Warm the token's groups cache and the connection pool.
        load::run(&url, &token, 4, Duration::from_millis(500), None).await;
        let closed = load::run(&url, &token, 16, duration, None).await;
        let paced = load::run(&url, &token, 32, duration, Some(1000.0)).await;
        let p99 = paced.percentile(0.99);
        rows.push(Row {
            scenario: format!("{label}, closed loop, 16 connections"),
            measured: format!(
                "{:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors",
                closed.rate(),
                ms(closed.percentile(0.5)),
                ms(closed.percentile(0.99)),
                closed.errors
            ),
            target: "report".to_owned(),
            limit: "—".to_owned(),
            met: None,
        });
        rows.push(Row {
            scenario: format!("{label}, paced at 1000 req/s"),
            measured: format!(
                "{:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors",
                paced.rate(),
                ms(paced.percentile(0.5)),
                ms(p99),
                paced.errors
            ),
            target: "p99 < 10 ms".to_owned(),
            limit: "—".to_owned(),
            met: Some(ms(p99) < 10.0 && paced.errors == 0),
        });
    }
    Ok(rows)
}

/// Mean duration per attempt of each outbound operation and of the assign request, from the
/// server's own /metrics: where the time goes.
async fn print_call_profile(api: &Api<'_>) {
    let Ok(response) = api
        .client
        .get(format!("{}/metrics", api.stack.api))
        .send()
        .await
    else {
        return;
    };
    let text = response.text().await.unwrap_or_default();
    let mut sums = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in text.lines() {
        for (metric, slot) in [
            ("vlab_external_call_duration_seconds_sum{", 0),
            ("vlab_external_call_duration_seconds_count{", 1),
        ] {
            if let Some(rest) = line.strip_prefix(metric)
                && let Some((labels, value)) = rest.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                let entry = sums
                    .entry(labels.trim_end_matches('}').to_owned())
                    .or_default();
                if slot == 0 { entry.0 = v } else { entry.1 = v }
            }
        }
    }
    eprintln!("outbound calls so far (mean per attempt, as the server saw them):");
    for (labels, (sum, count)) in sums {
        if count > 0.0 {
            eprintln!(
                "  {labels:<60} {count:>6} calls  {:>7.2} ms",
                sum / count * 1000.0
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(cli: &Cli, rows: &[Row]) {
    let width = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (w1, w2, w3) = (
        width(|r| &r.scenario),
        width(|r| &r.measured),
        width(|r| &r.target),
    );
    println!();
    println!(
        "vlab-bench — {} cores, {} ms emulator latency, EXTERNAL_CONCURRENCY={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cli.latency_ms,
        cli.concurrency
    );
    println!(
        "{:<w1$}  {:<w2$}  {:<w3$}  limit",
        "scenario", "measured", "target"
    );
    for r in rows {
        let mark = match r.met {
            Some(true) => "ok  ",
            Some(false) => "MISS",
            None => "    ",
        };
        println!(
            "{:<w1$}  {:<w2$}  {:<w3$}  {mark} {}",
            r.scenario, r.measured, r.target, r.limit
        );
    }
}
