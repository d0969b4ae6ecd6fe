//! Starts the real `vlab-dev` binary on free ports with its own database and state directory,
//! then uses what it prints like a newcomer would.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::{drop_database, seeded_vlab_dev, test_database_url};

#[tokio::test]
async fn the_dev_stack_starts_and_its_printed_tokens_work() {
    let (database_url, db_name) = test_database_url();
    let state_dir = std::env::temp_dir().join(format!("vlab-dev-{db_name}"));
    let tokens_file = state_dir.join("tokens.json");
    let (mut command, port, mail_port) = seeded_vlab_dev(&database_url, &state_dir, &tokens_file);
    let mut child = command
        .env_remove("CORS_ORIGINS")
        .env_remove("INVITE_LINK_BASE")
        // Logs at info, to a pipe: they must come without colour codes.
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start vlab-dev");

    // Read the banner: each user's token is on the line after its row; then the demo line,
    // then the guided course, then the line saying the tokens file is written.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed: Vec<String> = Vec::new();
    let read_banner = async {
        let mut tokens = std::collections::HashMap::new();
        let mut user: Option<String> = None;
        let mut course: Option<String> = None;
        while let Some(line) = lines.next_line().await.expect("read") {
            printed.push(line.clone());
            if let Some(course) = &course {
                if line.starts_with("Tokens and ids written to ") {
                    return (tokens, course.clone());
                }
                continue;
            }
            if let Some(name) = user.take() {
                tokens.insert(name, line.trim().to_owned());
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if ["obi-admin", "faculty"].contains(&first)
                && line.starts_with("  ")
                && !line.contains("Bearer")
            {
                user = Some(first.to_owned());
            }
            if let Some(rest) = line.strip_prefix("Demo data: lab ") {
                let id = rest
                    .split("course ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next());
                course = Some(id.expect("course id in the demo line").to_owned());
            }
        }
        panic!("vlab-dev exited before printing the demo data and the guided course");
    };
    let (tokens, course_id) = tokio::time::timeout(Duration::from_secs(120), read_banner)
        .await
        .expect("vlab-dev printed its banner and demo data in time");
    let token = tokens["obi-admin"].clone();
    // Keep reading what it prints (the log), so its pipe never fills.
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    // The guided course printed each admin call the seed made, with its answer.
    let text = printed.join("\n");
    for step in [
        "# 1. Create a course lab",
        "# 4. Create the course",
        "# 5. Set its dates",
        "# 6. Activate the course",
        "# 7. Invite the faculty member",
        "# 8. The faculty member accepts",
        "# 9. Provision seats",
        "/courses/claim",
        "/courses/activate-enrolments",
        "/drop",
    ] {
        assert!(
            text.contains(step),
            "the guided course shows {step:?}:\n{text}"
        );
    }
    assert_eq!(text.matches("#    → 200 ").count(), 9, "{text}");
    assert!(
        text.contains("CORS        allows http://localhost:3000"),
        "the banner names the allowed origin:\n{text}"
    );

    // --tokens-file: the same ids, and tokens that work.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tokens_file).expect("the tokens file"))
            .expect("JSON");
    assert_eq!(written["course_id"], course_id.as_str());
    assert!(written["virtual_lab_id"].is_string(), "{written}");
    for user in [
        "obi-admin",
        "obi-virtual-lab",
        "faculty",
        "student-1",
        "student-2",
        "student-3",
    ] {
        assert!(written["tokens"][user].is_string(), "{user} in {written}");
    }

    let api = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{api}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    let search = format!("{api}/institutions/_search");
    let ok = client
        .get(&search)
        .bearer_auth(&token)
        .send()
        .await
        .expect("search");
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(body["data"][0]["name"], "Open Brain Institute");

    // The demo course is active with 10 seats, and the faculty joined its lab by invite.
    let course: serde_json::Value = client
        .get(format!("{api}/courses/{course_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("course")
        .json()
        .await
        .expect("json");
    assert_eq!(course["data"]["status"], "active", "{course}");
    let seats = client
        .get(format!("{api}/seats/courses/{course_id}"))
        .bearer_auth(&tokens["faculty"])
        .send()
        .await
        .expect("seats");
    assert_eq!(seats.status(), 200);
    let seats: serde_json::Value = seats.json().await.expect("json");
    assert_eq!(seats["pagination"]["total_items"], 10);

    // Flip one character in the middle of the signature.
    let signature_start = token.rfind('.').expect("a JWT") + 1;
    let i = signature_start + (token.len() - signature_start) / 2;
    let flipped = if &token[i..=i] == "A" { "B" } else { "A" };
    let tampered = format!("{}{}{}", &token[..i], flipped, &token[i + 1..]);
    let refused = client
        .get(&search)
        .bearer_auth(&tampered)
        .send()
        .await
        .expect("search");
    assert_eq!(refused.status(), 401);

    // A preflight from the web frontend's origin is allowed by default.
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{api}/courses/claim"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );

    // The mailbox page, for a browser; the JSON list for programs.
    let mailbox = format!("http://127.0.0.1:{mail_port}");
    let page = client
        .get(format!("{mailbox}/"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("mailbox page");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let page = page.text().await.expect("text");
    assert!(page.contains("faculty@example.org"), "{page}");
    let list: serde_json::Value = client
        .get(format!("{mailbox}/messages"))
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("JSON list");
    assert_eq!(list[0]["to"][0], "faculty@example.org", "{list}");

    child.kill().await.expect("stop vlab-dev");
    let log = rest.await.expect("the log");
    assert!(!text.contains('\u{1b}'), "a banner without colour codes");
    assert!(
        !log.is_empty() && log.iter().all(|l| !l.contains('\u{1b}')),
        "log lines without colour codes: {log:?}"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    drop_database(&database_url, &db_name).await;
}
