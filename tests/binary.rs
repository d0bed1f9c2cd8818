//! The built binary as an operator runs it: refusing bad settings, serving, and draining on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::TOKEN;
use mock_anthropic::MockAnthropic;

const BIN: &str = env!("CARGO_BIN_EXE_claude-gateway");

fn run_to_exit(envs: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_token_it_refuses_to_start_and_says_what_to_set() {
    let (code, _, stderr) = run_to_exit(&[], &[]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("API_BEARER_TOKEN"), "{stderr}");
}

#[test]
fn invalid_settings_stop_it_with_status_2() {
    let jobs = tempfile::tempdir().unwrap();
    let jobs_dir = jobs.path().to_str().unwrap();
    for (name, value) in [
        ("MAX_CONCURRENCY", "lots"),
        ("MAX_CONCURRENCY", "0"),
        ("MAX_QUEUE_DEPTH", "-1"),
        ("LISTEN_ADDR", "not-an-address"),
    ] {
        let (code, _, stderr) = run_to_exit(
            &[
                ("API_BEARER_TOKEN", "secret-token-value"),
                ("JOBS_DIR", jobs_dir),
                (name, value),
            ],
            &[],
        );
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(name) || stderr.contains(&name.to_lowercase().replace('_', "-")),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("secret-token-value"), "{stderr}");
    }
    // A JOBS_DIR that cannot be created: a file stands where its parent should be.
    let file = jobs.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let unusable = file.join("jobs");
    let (code, _, stderr) = run_to_exit(
        &[
            ("API_BEARER_TOKEN", "t"),
            ("JOBS_DIR", unusable.to_str().unwrap()),
            ("LISTEN_ADDR", "127.0.0.1:0"),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("jobs"), "{stderr}");
}

#[test]
fn help_lists_every_setting_the_readme_documents_and_no_secret() {
    let (code, stdout, _) = run_to_exit(&[("API_BEARER_TOKEN", "secret-token-value")], &["--help"]);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("secret-token-value"));
    // The README's configuration table: one row per setting, `| `NAME` | default | meaning |`.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("a configuration section");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    let offered: Vec<&str> = stdout
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    assert!(offered.len() > 25, "{stdout}");
    for name in &offered {
        assert!(
            documented.contains(name),
            "the README does not document {name}"
        );
    }
    for name in &documented {
        assert!(offered.contains(name), "--help misses {name}");
    }
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let mock = MockAnthropic::start().await;
    let jobs = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut envs: Vec<(String, String)> = common::agent_env(&mock.url(), home.path());
    envs.extend([
        ("API_BEARER_TOKEN".to_owned(), TOKEN.to_owned()),
        ("JOBS_DIR".to_owned(), jobs.path().display().to_string()),
        ("WORKSPACE_DIR".to_owned(), "/nonexistent/base".to_owned()),
        (
            "CLAUDE_BIN".to_owned(),
            common::claude_bin().display().to_string(),
        ),
        ("SHUTDOWN_GRACE_SECONDS".to_owned(), "60".to_owned()),
    ]);
    let (mut child, url) = common::spawn_binary(BIN, envs).await;

    let http = reqwest::Client::new();
    let request = http
        .post(format!("{url}{}", common::CHAT))
        .bearer_auth(TOKEN)
        .json(&common::Gateway::chat_body("[[mock:delay 2000]] slow one"))
        .send();
    let in_flight = tokio::spawn(request);
    // SIGTERM once the agent's request has reached the API: the run is surely in flight.
    mock.wait_for_requests(1, Duration::from_secs(30))
        .await
        .expect("the agent reached the API");
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("slow one"),
        "{body}"
    );

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
