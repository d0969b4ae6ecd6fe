//! A real browser against a running `vlab-dev`: headless Chromium (Debian's `chromium`)
//! loads the Swagger UI and the mailbox pages the way a newcomer would open them.
//!
//! The browser is driven through its own command line (`--dump-dom`, `--screenshot`,
//! `--virtual-time-budget`): it renders a page, runs its scripts and fetches until the page
//! is idle, then prints the resulting DOM and writes a screenshot. That needs nothing but the
//! `chromium` package — no driver crate, no WebDriver, no Node — and each run is one bounded
//! process. Screenshots are kept in `target/browser/`.
//!
//! When no Chromium is installed the test says so and passes, unless `VLAB_BROWSER_TEST` is
//! `required` (`.ci/run` installs Chromium and sets it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

mod support;
use support::{drop_database, seeded_vlab_dev, target_dir, test_database_url};

/// Headless on a machine with no internet: without the networking flags Chromium keeps trying
/// to reach Google's hosts and stalls.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
];
/// A run of the browser that takes longer than this is killed (and tried again).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
const ATTEMPTS: usize = 3;

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

struct Browser {
    binary: PathBuf,
    shots: PathBuf,
}

impl Browser {
    /// Opens `url` in a fresh profile, lets it run until idle (at most `budget_ms` of page
    /// time), saves a screenshot named `shot` and returns the DOM.
    async fn render(&self, url: &str, shot: &str, height: u32, budget_ms: u32) -> String {
        let profile = std::env::temp_dir().join(format!(
            "vlab-dev-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let screenshot = self.shots.join(shot);
        let started = Instant::now();
        let mut command = Command::new(&self.binary);
        command
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size=1280,{height}"))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(BROWSER_TIMEOUT, command.output()).await;
        let _ = std::fs::remove_dir_all(&profile);
        let output = match output {
            Ok(output) => output.expect("run chromium"),
            Err(_) => {
                eprintln!("chromium did not finish {url} within {BROWSER_TIMEOUT:?}");
                return String::new();
            }
        };
        let dom = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || dom.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            eprintln!(
                "chromium on {url} exited with {} after {:?}; its last lines:\n{}",
                output.status,
                started.elapsed(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        } else {
            eprintln!("chromium rendered {url} in {:?}", started.elapsed());
        }
        dom
    }

    /// [`render`](Self::render) until `done` holds for the DOM, a few times at most.
    async fn render_until(
        &self,
        url: &str,
        shot: &str,
        height: u32,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let mut dom = String::new();
        for attempt in 1..=ATTEMPTS {
            // More page time on each attempt, for a slow machine.
            let budget = 10_000 * attempt as u32;
            dom = self.render(url, shot, height, budget).await;
            if done(&dom) {
                return dom;
            }
            eprintln!("attempt {attempt}: {url} was not ready yet");
        }
        dom
    }
}

/// Every value of the attribute `name` in an HTML text (double-quoted, as Chromium prints).
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| rest[..end].replace("&amp;", "&"))
        })
        .collect()
}

async fn wait_for_file(path: &Path, child: &mut tokio::process::Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vlab-dev exited with {status} before it was ready");
        }
        assert!(
            Instant::now() < deadline,
            "vlab-dev did not write {} in time",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn swagger_ui_and_the_mailbox_work_in_a_real_browser() {
    let Some(binary) = find_chromium() else {
        let required = std::env::var("VLAB_BROWSER_TEST").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "VLAB_BROWSER_TEST=required but no chromium on PATH (apt-get install chromium)"
        );
        eprintln!("SKIPPED: no chromium on PATH; `.ci/run` installs it (apt-get install chromium)");
        return;
    };
    let shots = target_dir().join("browser");
    std::fs::create_dir_all(&shots).expect("target/browser");
    let browser = Browser { binary, shots };

    let (database_url, db_name) = test_database_url();
    let state_dir = std::env::temp_dir().join(format!("vlab-dev-browser-{db_name}"));
    let tokens_file = state_dir.join("tokens.json");
    let (mut command, port, mail_port) = seeded_vlab_dev(&database_url, &state_dir, &tokens_file);
    let mut child = command
        .env("INVITE_LINK_BASE", "http://localhost:3000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start vlab-dev");
    wait_for_file(&tokens_file, &mut child, Duration::from_secs(180)).await;
    let written: Value =
        serde_json::from_slice(&std::fs::read(&tokens_file).expect("tokens file")).expect("JSON");
    let course_id = written["course_id"].as_str().expect("course_id").to_owned();
    let faculty = written["tokens"]["faculty"]
        .as_str()
        .expect("faculty token")
        .to_owned();
    let api = format!("http://127.0.0.1:{port}");
    let mailbox = format!("http://127.0.0.1:{mail_port}");

    // 1. The Swagger UI finishes loading and lists the course endpoints.
    let course_paths = [
        "/courses",
        "/courses/claim",
        "/courses/activate-enrolments",
        "/courses/{course_id}/activate",
        "/seats/courses/{course_id}/assign",
    ];
    let listed = |dom: &str| -> bool {
        let paths = attribute_values(dom, "data-path");
        course_paths
            .iter()
            .all(|p| paths.iter().any(|listed| listed == p))
    };
    let docs = browser
        .render_until(&format!("{api}/docs"), "swagger-ui.png", 2400, listed)
        .await;
    assert!(
        listed(&docs),
        "the Swagger UI lists {course_paths:?}; it showed the paths {:?}",
        attribute_values(&docs, "data-path")
    );

    // 2. An assign sends the claim e-mail.
    let student = "student-2@example.org";
    let assign: Value = reqwest::Client::new()
        .post(format!("{api}/seats/courses/{course_id}/assign"))
        .bearer_auth(&faculty)
        .json(&json!({"students": [{"student_id": "stu-browser", "email": student}]}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("assign")
        .json()
        .await
        .expect("assign JSON");
    let result = &assign["results"][0];
    assert_eq!(result["assignment_successful"], true, "{assign}");
    let enrolment_id = result["enrolment_id"].as_str().expect("enrolment_id");
    let claim_link = format!("http://localhost:3000/course-enrolment?enrolment_id={enrolment_id}");

    // The e-mail is sent by the use case; wait for it in the JSON list.
    let deadline = Instant::now() + Duration::from_secs(60);
    let message_id = loop {
        let list: Value = reqwest::get(format!("{mailbox}/messages"))
            .await
            .expect("messages")
            .json()
            .await
            .expect("JSON list");
        let found = list.as_array().and_then(|l| {
            l.iter()
                .find(|m| m["to"][0] == student)
                .and_then(|m| m["id"].as_str().map(str::to_owned))
        });
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "no claim e-mail: {list}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // 3. It shows up on the mailbox page.
    let row = format!("/messages/{message_id}");
    let list = browser
        .render_until(&format!("{mailbox}/"), "mailbox.png", 900, |dom| {
            dom.contains(&row)
        })
        .await;
    assert!(
        list.contains(&row),
        "the mailbox page lists the claim e-mail:\n{list}"
    );
    assert!(list.contains(student), "with its recipient:\n{list}");

    // 4. Its page shows the HTML part in a sandboxed frame, and the claim link.
    let page = browser
        .render_until(
            &format!("{mailbox}/messages/{message_id}"),
            "claim-email.png",
            1200,
            |dom| dom.contains("id=\"html-part\""),
        )
        .await;
    let frames = attribute_values(&page, "src");
    assert!(
        frames.contains(&format!("/messages/{message_id}/html")),
        "the HTML part is framed: {frames:?}"
    );
    assert!(
        attribute_values(&page, "sandbox")
            .iter()
            .any(|s| !s.contains("allow-scripts") && !s.contains("allow-same-origin")),
        "the frame is sandboxed:\n{page}"
    );
    assert!(
        attribute_values(&page, "href").contains(&claim_link),
        "the page links {claim_link}:\n{page}"
    );

    // 5. The HTML part renders on its own, and its button is the link the API returned.
    let part = browser
        .render_until(
            &format!("{mailbox}/messages/{message_id}/html"),
            "claim-email-html-part.png",
            1000,
            |dom| dom.contains("<body"),
        )
        .await;
    let links = attribute_values(&part, "href");
    assert!(
        links.contains(&claim_link),
        "the claim e-mail's HTML part links {claim_link}; it links {links:?}"
    );
    for shot in ["swagger-ui.png", "mailbox.png", "claim-email.png"] {
        let size = std::fs::metadata(browser.shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            size > 1000,
            "the screenshot {shot} was written ({size} bytes)"
        );
    }
    eprintln!("screenshots in {}", browser.shots.display());

    child.kill().await.expect("stop vlab-dev");
    let _ = std::fs::remove_dir_all(&state_dir);
    drop_database(&database_url, &db_name).await;
}
