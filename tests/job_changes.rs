//! What a job's run changed, and delivering it: the built binary, the real `claude` CLI against
//! the mock Anthropic API (whose `[[mock:bash …]]` directives make the agent edit, add and commit
//! files), real git with a bare origin and a warm base clone.
//!
//! - the record's `changes` and `GET /jobs/{id}/diff` show an edit, an addition and a commit, and
//!   the patch applied with `git apply` on the base commit in a fresh clone gives the tree the
//!   agent left;
//! - `deliver` pushes a branch the origin then has, with the uncommitted changes committed by
//!   `DELIVERY_AUTHOR`; a push the origin refuses is a delivery error and the job still
//!   `completed`; invalid branch names and the base branch are refused at submission;
//! - a git-crypt file the run changed never appears in plaintext in the record or the patch, and
//!   is pushed encrypted.

mod common;
mod store_support;

use std::fmt::Display;
use std::path::Path;

use common::{git, git_crypt_fixture, Repos};
use mock_anthropic::{MockAnthropic, RecordedRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;

/// The author delivery commits get in these tests.
const AUTHOR: &str = "Gate Way <gate@example.com>";

/// The built gateway over `base`, with `extra` settings, and what it runs against.
async fn start(base: &Path, extra: &[(&str, &dyn Display)]) -> (Binary, Backing) {
    let backing = Backing::start().await;
    let mut settings = backing.settings(extra);
    set(&mut settings, "WORKSPACE_DIR", base.display());
    set(&mut settings, "DELIVERY_AUTHOR", AUTHOR);
    (Binary::start(&settings).await, backing)
}

/// What the agent's bash commands printed, over every API call.
fn tool_outputs(mock: &MockAnthropic) -> Vec<String> {
    mock.message_requests()
        .iter()
        .flat_map(RecordedRequest::tool_outputs)
        .collect()
}

/// `GET /jobs/{id}/diff`: status, content type, truncation header and body.
async fn diff(gw: &Binary, job_id: &str) -> (StatusCode, String, String, String) {
    let response = gw
        .http
        .get(format!("{}/jobs/{job_id}/diff", gw.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (kind, cut) = (header("content-type"), header("x-diff-truncated"));
    (status, kind, cut, response.text().await.expect("body"))
}

/// The agent's commands: edit a tracked file, add a file, commit one more, then print the tree
/// of everything it left (through a private index, so its own index stays as it was).
const EDIT_ADD_COMMIT: &str = "printf 'one\\nTWO\\n' > tracked.txt && echo new > added.txt && \
     echo committed > committed.txt && git add committed.txt && \
     git -c user.name=Agent -c user.email=agent@example.com commit -q -m agent-commit && \
     GIT_INDEX_FILE=/tmp/final-index-$$ git add -A && echo FINAL-TREE=$(GIT_INDEX_FILE=/tmp/final-index-$$ git write-tree)";

/// Repos whose base holds `README.md` and `tracked.txt`.
/// Runs `prompt` as a job that delivers to `branch`; answers its id and its record, the job
/// completed.
async fn delivered(gw: &Binary, prompt: &str, branch: &str) -> (String, Value) {
    let job = gw
        .submit(prompt, json!({"deliver": {"branch": branch}}))
        .await;
    let record = gw.wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    (job, record)
}

fn repos() -> Repos {
    Repos::seeded(
        "main",
        [("README.md", "hello\n"), ("tracked.txt", "one\ntwo\n")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_and_the_diff_show_an_edit_an_addition_and_a_commit_and_the_diff_applies() {
    let fx = repos();
    let base_commit = git(&fx.base, &["rev-parse", "HEAD"]);
    let (gw, backing) = start(&fx.base, &[]).await;

    let job = gw
        .submit(
            &format!("[[mock:bash {EDIT_ADD_COMMIT}]] [[mock:text done]]"),
            Value::Null,
        )
        .await;
    let record = gw.wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert!(
        record.get("patch").is_none(),
        "the patch is not in the record: {record}"
    );
    let changes = &record["changes"];
    assert_eq!(changes["base_commit"], base_commit, "{record}");
    assert_eq!(changes["truncated"], false, "{record}");
    let head = changes["head_commit"].as_str().expect("a head commit");
    assert_ne!(head, base_commit);
    assert_eq!(
        changes["commits"],
        json!([head]),
        "one commit of the agent's: {record}"
    );
    let mut files: Vec<(String, String, Value, Value)> = changes["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["additions"].clone(),
                f["deletions"].clone(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        files,
        vec![
            ("added.txt".into(), "added".into(), json!(1), json!(0)),
            ("committed.txt".into(), "added".into(), json!(1), json!(0)),
            ("tracked.txt".into(), "modified".into(), json!(1), json!(1)),
        ],
        "{record}"
    );

    let (status, kind, cut, patch) = diff(&gw, &job).await;
    assert_eq!(status, StatusCode::OK, "{patch}");
    assert_eq!(kind, "text/x-diff");
    assert_eq!(cut, "false");
    for needle in [
        "+TWO",
        "-two",
        "+new",
        "+committed",
        "added.txt",
        "committed.txt",
    ] {
        assert!(patch.contains(needle), "{needle} in the patch: {patch}");
    }

    // The patch on the base commit, in a fresh clone, gives the tree the agent left.
    let final_tree = tool_outputs(&backing.mock)
        .iter()
        .find_map(|out| {
            out.split("FINAL-TREE=")
                .nth(1)
                .map(|rest| rest.trim().chars().take(40).collect::<String>())
        })
        .expect("the agent printed its final tree");
    let fresh = fx.root.path().join("fresh");
    git(
        fx.root.path(),
        &["clone", "--quiet", &fx.remote_url(), "fresh"],
    );
    git(&fresh, &["checkout", "--quiet", &base_commit]);
    let patch_file = fx.root.path().join("job.patch");
    std::fs::write(&patch_file, &patch).unwrap();
    git(&fresh, &["apply", "--index", &patch_file.to_string_lossy()]);
    assert_eq!(git(&fresh, &["write-tree"]), final_tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_pushes_a_branch_and_a_refused_push_is_a_delivery_error() {
    let fx = repos();
    let (gw, _backing) = start(&fx.base, &[]).await;

    // Refused at submission: names git would refuse, and the base branch.
    for branch in ["bad..name", "-x", "a b", "main"] {
        gw.assert_refused(
            json!({"prompt": "hi", "deliver": {"branch": branch}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deliver",
        )
        .await;
    }

    let job = gw
        .submit(
            &format!("[[mock:bash {EDIT_ADD_COMMIT}]] [[mock:text done]]"),
            json!({"deliver": {"branch": "gateway/delivered", "commit_message": "What the job left"}}),
        )
        .await;
    let record = gw.wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    let delivery = &record["delivery"];
    assert_eq!(delivery["branch"], "gateway/delivered", "{record}");
    assert_eq!(delivery["error"], Value::Null, "{record}");
    assert!(delivery["pushed_at"].is_string(), "{record}");
    let commit = delivery["commit"].as_str().expect("a commit").to_owned();

    // The origin has the branch: the agent's commit, then the gateway's of what it left.
    let remote = &fx.remote;
    assert_eq!(
        git(remote, &["rev-parse", "refs/heads/gateway/delivered"]),
        commit
    );
    assert_eq!(
        git(
            remote,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", &commit]
        ),
        format!("{AUTHOR}|{AUTHOR}|What the job left")
    );
    assert_eq!(
        git(remote, &["rev-parse", &format!("{commit}^")]),
        record["changes"]["head_commit"].as_str().unwrap()
    );
    assert_eq!(
        git(remote, &["show", &format!("{commit}:tracked.txt")]),
        "one\nTWO"
    );
    assert_eq!(
        git(remote, &["show", &format!("{commit}:added.txt")]),
        "new"
    );
    assert_eq!(
        git(remote, &["show", &format!("{commit}:committed.txt")]),
        "committed"
    );

    // The origin refuses the next push: a delivery error, and the job still completed.
    let hook = remote.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (_, record) = delivered(
        &gw,
        "[[mock:bash echo more > more.txt]] [[mock:text done]]",
        "gateway/refused",
    )
    .await;
    let delivery = &record["delivery"];
    assert_eq!(delivery["pushed_at"], Value::Null, "{record}");
    let error = delivery["error"].as_str().expect("a delivery error");
    assert!(error.contains("refused"), "{error}");
    assert!(
        error.contains("pre-receive hook declined") || error.contains("no pushes today"),
        "{error}"
    );
    let branches = git(remote, &["branch", "--list"]);
    assert!(!branches.contains("gateway/refused"), "{branches}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_git_crypt_file_never_appears_in_plaintext() {
    let (fx, key) = git_crypt_fixture();
    // The base is the fixture's clone from before git-crypt's files: bring it up to date.
    git(&fx.base, &["pull", "--quiet", "--ff-only"]);
    let (gw, backing) = start(&fx.base, &[("GIT_CRYPT_KEY", &key.display())]).await;

    // The prompt is in the record: the new secret is only put together by the shell.
    let prompt = "[[mock:bash cat secret.txt && printf 'a NEW-%s-SECRET\\n' PLAINTEXT > secret.txt && echo visible > other.txt]] [[mock:text done]]";
    let (job, record) = delivered(&gw, prompt, "gateway/crypt").await;
    assert!(
        tool_outputs(&backing.mock)
            .iter()
            .any(|o| o.contains("the plaintext secret")),
        "the workspace was unlocked for the agent"
    );
    let text = record.to_string();
    let (status, _, _, patch) = diff(&gw, &job).await;
    assert_eq!(status, StatusCode::OK);
    for secret in ["NEW-PLAINTEXT-SECRET", "the plaintext secret"] {
        assert!(!text.contains(secret), "{secret} in the record: {text}");
        assert!(!patch.contains(secret), "{secret} in the patch: {patch}");
    }
    let files = record["changes"]["files"].as_array().expect("files");
    let secret = files
        .iter()
        .find(|f| f["path"] == "secret.txt")
        .expect("secret.txt is listed");
    assert_eq!(secret["encrypted"], true, "{record}");
    assert_eq!(secret["additions"], Value::Null, "{record}");
    assert!(
        patch.contains("other.txt") && !patch.contains("secret.txt"),
        "{patch}"
    );

    // Delivered encrypted: the pushed blob is git-crypt's ciphertext.
    assert_eq!(record["delivery"]["error"], Value::Null, "{record}");
    let commit = record["delivery"]["commit"].as_str().unwrap();
    let blob = std::process::Command::new("git")
        .args(["cat-file", "blob", &format!("{commit}:secret.txt")])
        .current_dir(&fx.remote)
        .output()
        .unwrap();
    assert!(blob.status.success());
    assert!(
        blob.stdout.starts_with(b"\0GITCRYPT\0"),
        "ciphertext pushed"
    );
    assert!(!String::from_utf8_lossy(&blob.stdout).contains("NEW-PLAINTEXT-SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_agent_leaves_in_its_git_config_never_runs_and_never_redirects_the_push() {
    let fx = repos();
    // A directory anyone may write to: a marker there means something the agent set up ran.
    let markers = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        markers.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let m = markers.path().display();
    // No session is kept, so no git runs as the run after it: only the gateway's harvest could
    // set off what the agent left.
    let (gw, _backing) = start(&fx.base, &[("MAX_SESSION_BYTES", &0)]).await;

    let decoy = fx.root.path().join("decoy.git");
    git(fx.root.path(), &["init", "--quiet", "--bare", "decoy.git"]);
    let hostile = format!(
        "echo changed > tracked.txt && mkdir -p .git/evil-hooks && \
         printf '#!/bin/sh\\ntouch {m}/hook\\n' > .git/evil-hooks/pre-commit && \
         cp .git/evil-hooks/pre-commit .git/evil-hooks/pre-push && \
         cp .git/evil-hooks/pre-commit .git/hooks/pre-commit && chmod +x .git/evil-hooks/* .git/hooks/pre-commit && \
         git config core.hooksPath .git/evil-hooks && \
         git config core.fsmonitor 'touch {m}/fsmonitor' && \
         git config filter.evil.clean 'touch {m}/filter; cat' && git config filter.evil.required true && \
         git config diff.external 'touch {m}/diff' && \
         echo '* filter=evil diff=evil' > .gitattributes && git config diff.evil.textconv 'touch {m}/textconv; cat' && \
         git remote set-url origin {decoy} && git remote set-url --push origin {decoy} && \
         ln -s /etc/passwd passwd-link",
        decoy = decoy.display()
    );
    let (job, record) = delivered(
        &gw,
        &format!("[[mock:bash {hostile}]] [[mock:text done]]"),
        "gateway/hostile",
    )
    .await;
    let left: Vec<_> = std::fs::read_dir(markers.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "something the agent set up ran: {left:?}");

    // Delivered to the base's origin, not where the agent pointed its checkout.
    assert_eq!(record["delivery"]["error"], Value::Null, "{record}");
    let commit = record["delivery"]["commit"].as_str().unwrap();
    assert_eq!(
        git(&fx.remote, &["rev-parse", "refs/heads/gateway/hostile"]),
        commit
    );
    assert_eq!(git(&decoy, &["for-each-ref"]), "");
    // The symlink is a symlink in the commit and in the patch, not the file it points to.
    let listing = git(&fx.remote, &["ls-tree", commit, "passwd-link"]);
    assert!(listing.starts_with("120000 "), "{listing}");
    let (_, _, _, patch) = diff(&gw, &job).await;
    assert!(patch.contains("new file mode 120000"), "{patch}");
    assert!(!patch.contains("root:x:0:0"), "{patch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_crypt_file_stays_hidden_when_the_agent_drops_its_attribute() {
    let (fx, key) = git_crypt_fixture();
    let (gw, _backing) = start(&fx.base, &[("GIT_CRYPT_KEY", &key.display())]).await;

    // The agent unmarks the file, so git would take it as plain text.
    let prompt = "[[mock:bash printf 'a NEW-%s-SECRET\\n' PLAINTEXT > secret.txt && : > .gitattributes]] [[mock:text done]]";
    let (job, record) = delivered(&gw, prompt, "gateway/unmarked").await;
    let (_, _, _, patch) = diff(&gw, &job).await;
    for secret in ["NEW-PLAINTEXT-SECRET", "the plaintext secret"] {
        assert!(
            !record.to_string().contains(secret),
            "{secret} in the record: {record}"
        );
        assert!(!patch.contains(secret), "{secret} in the patch: {patch}");
    }
    assert!(
        patch.contains("diff --git a/.gitattributes") && !patch.contains("diff --git a/secret.txt"),
        "{patch}"
    );
    let error = record["delivery"]["error"].as_str().expect("not delivered");
    assert!(
        error.contains("secret.txt") && error.contains("unencrypted"),
        "{error}"
    );
    assert_eq!(record["delivery"]["pushed_at"], Value::Null);
    assert!(!git(&fx.remote, &["branch", "--list"]).contains("gateway/unmarked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_crypt_file_committed_in_plaintext_along_the_way_is_never_pushed() {
    let (fx, key) = git_crypt_fixture();
    let (gw, _backing) = start(&fx.base, &[("GIT_CRYPT_KEY", &key.display())]).await;

    // With git-crypt's filters bypassed, the agent commits the file in plaintext, then commits
    // the ciphertext back: the final tree is the base's, the history is not.
    let plain = "-c filter.git-crypt.clean=cat -c filter.git-crypt.smudge=cat -c filter.git-crypt.required=false \
                 -c user.name=Agent -c user.email=agent@example.com";
    let script = format!(
        "printf 'a NEW-%s-SECRET\\n' PLAINTEXT > secret.txt && git {plain} commit -qam leak && \
         git {plain} checkout HEAD~1 -- secret.txt && git {plain} commit -qam hide && \
         echo visible > other.txt"
    );
    let (job, record) = delivered(
        &gw,
        &format!("[[mock:bash {script}]] [[mock:text done]]"),
        "gateway/laundered",
    )
    .await;
    assert_eq!(
        record["changes"]["commits"].as_array().map(Vec::len),
        Some(2),
        "the agent's two commits: {record}"
    );
    let error = record["delivery"]["error"].as_str().expect("not delivered");
    assert!(
        error.contains("secret.txt") && error.contains("unencrypted"),
        "{error}"
    );
    assert!(!git(&fx.remote, &["branch", "--list"]).contains("gateway/laundered"));
    let (_, _, _, patch) = diff(&gw, &job).await;
    assert!(!patch.contains("NEW-PLAINTEXT-SECRET"), "{patch}");
}
