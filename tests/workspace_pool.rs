//! The warm pool of checkouts, as a caller and an operator see it: runs take ready checkouts of
//! the current base, a checkout goes to one run only, the pool refills, gives way when disk runs
//! low, and is swept at start-up.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{eventually, json, secs, Gateway, Repos};
use serde_json::Value;

/// What the `workspace-probe.sh` stand-in reported: `head=… claimed=… dir=…`.
#[derive(Debug)]
struct Probe {
    head: String,
    claimed: String,
    /// Whether every entry of the workspace belonged to the run's own uid.
    owned: String,
    dir: String,
}

/// Runs one chat completion and reads the probe's report.
async fn probe(gw: &Gateway) -> Probe {
    let body: Value = json(gw.chat("where am I?").await).await;
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {body}"))
        .to_owned();
    let field = |name: &str| {
        text.split(' ')
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
            .to_owned()
    };
    Probe {
        head: field("head"),
        claimed: field("claimed"),
        owned: field("owned"),
        dir: field("dir"),
    }
}

/// A gateway over `fx`'s base running the probe, with a pool of `size`.
async fn pooled_gateway(fx: &Repos, size: usize, extra: &[(&str, &str)]) -> Gateway {
    let mut builder = Gateway::builder()
        .base(&fx.base)
        .fake("workspace-probe.sh")
        .arg("workspace-pool-size", size);
    for (flag, value) in extra {
        builder = builder.arg(flag, value);
    }
    builder.start().await
}

/// Waits (bounded) until `/health` shows `ready` checkouts in a warm pool.
async fn wait_pool_ready(gw: &Gateway, ready: u64) {
    gw.wait_health(|h| h["pool"] == "warm" && h["pool_ready"] == ready)
        .await;
}

const HITS: &str = "claude_gateway_workspace_pool_takes_total{result=\"hit\"}";
const MISSES: &str = "claude_gateway_workspace_pool_takes_total{result=\"miss\"}";

#[tokio::test]
async fn a_run_takes_a_ready_checkout_of_the_base_and_the_pool_refills() {
    let fx = Repos::new();
    let head = common::git(&fx.base, &["rev-parse", "HEAD"]);
    let gw = pooled_gateway(&fx, 2, &[]).await;
    wait_pool_ready(&gw, 2).await;
    let pooled_before: HashSet<_> = gw.pooled().into_iter().collect();

    let run = probe(&gw).await;

    assert_eq!(run.head, head);
    assert_eq!(run.claimed, "no");
    // Handed over ahead of time: the checkout was already the run's when it started.
    assert_eq!(run.owned, "yes");
    assert!(
        Path::new(&run.dir).starts_with(gw.jobs_dir.path()),
        "{}",
        run.dir
    );
    assert_eq!(gw.metric(HITS).await, 1.0);
    assert_eq!(gw.metric(MISSES).await, 0.0);
    // The run's workspace was one of the ready checkouts, renamed; the pool made another.
    wait_pool_ready(&gw, 2).await;
    let pooled_after: HashSet<_> = gw.pooled().into_iter().collect();
    assert_eq!(pooled_before.intersection(&pooled_after).count(), 1);
    gw.wait_workspaces_gone().await;
    let text = gw.get_open("/metrics").await.text().await.expect("text");
    for line in [
        "claude_gateway_workspace_pool_size 2",
        "claude_gateway_workspace_pool_ready 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(text.contains("claude_gateway_workspace_checkout_seconds_count{by=\"pool\"}"));
    assert!(text.contains("claude_gateway_workspace_handover_seconds_count"));
}

#[tokio::test]
async fn after_a_new_commit_reaches_the_origin_and_the_debounce_passes_the_next_run_sees_it() {
    let fx = Repos::new();
    let gw = pooled_gateway(&fx, 2, &[("fetch-debounce-seconds", "0")]).await;
    wait_pool_ready(&gw, 2).await;
    let first = probe(&gw).await;
    wait_pool_ready(&gw, 2).await;

    // The pool now holds checkouts of the old commit.
    let newer = fx.push("later.txt", "1");
    let second = probe(&gw).await;

    assert_ne!(first.head, newer);
    assert_eq!(second.head, newer, "the run started from an older base");
    // The pool goes on with checkouts of the new base, and the next run takes one.
    wait_pool_ready(&gw, 2).await;
    let hits = gw.metric(HITS).await;
    let third = probe(&gw).await;
    assert_eq!(third.head, newer);
    assert_eq!(gw.metric(HITS).await, hits + 1.0);
}

#[tokio::test]
async fn with_a_debounce_window_a_new_commit_is_seen_once_the_window_has_passed() {
    let fx = Repos::new();
    let gw = pooled_gateway(&fx, 2, &[("fetch-debounce-seconds", "1")]).await;
    wait_pool_ready(&gw, 2).await;
    let newer = fx.push("later.txt", "1");
    // Every run starts from the base as the debounce rules allow; within a bounded time (the
    // window, then one refresh) a run sees the new commit.
    eventually("a run sees the new commit", secs(30), || async {
        let run = probe(&gw).await;
        if run.head == newer {
            Ok(())
        } else {
            Err(run.head)
        }
    })
    .await;
}

#[tokio::test]
async fn no_checkout_is_ever_handed_to_two_runs() {
    let fx = Repos::new();
    let gw = pooled_gateway(&fx, 3, &[("max-concurrency", "3")]).await;
    wait_pool_ready(&gw, 3).await;

    let runs = futures_util::future::join_all((0..12).map(|_| probe(&gw))).await;

    let dirs: HashSet<_> = runs.iter().map(|r| r.dir.clone()).collect();
    assert_eq!(
        dirs.len(),
        runs.len(),
        "a workspace was given twice: {runs:?}"
    );
    assert!(
        runs.iter().all(|r| r.claimed == "no"),
        "a run found another run's mark: {runs:?}"
    );
    assert!(gw.metric(HITS).await >= 1.0);
    assert_eq!(gw.metric(HITS).await + gw.metric(MISSES).await, 12.0);
    gw.wait_workspaces_gone().await;
}

#[tokio::test]
async fn when_jobs_dir_is_low_on_space_the_pool_holds_nothing_and_runs_still_get_checkouts() {
    let fx = Repos::new();
    let head = common::git(&fx.base, &["rev-parse", "HEAD"]);
    // A reserve no disk has: JOBS_DIR is always "low".
    let gw = pooled_gateway(&fx, 2, &[("workspace-pool-min-free-mb", "1000000000")]).await;

    let run = probe(&gw).await;

    assert_eq!(run.head, head);
    assert_eq!(gw.metric(MISSES).await, 1.0);
    let health = gw.health().await;
    assert_eq!(health["pool"], "cold", "{health}");
    assert_eq!(health["pool_ready"], 0, "{health}");
    assert!(gw.pooled().is_empty(), "{:?}", gw.pooled());
}

#[tokio::test]
async fn pool_size_zero_clones_each_run_as_before() {
    let fx = Repos::new();
    let head = common::git(&fx.base, &["rev-parse", "HEAD"]);
    let gw = pooled_gateway(&fx, 0, &[]).await;

    let run = probe(&gw).await;

    assert_eq!(run.head, head);
    assert_eq!(gw.health().await["pool"], "off");
    assert!(!gw.jobs_dir.path().join(".pool").exists());
    assert_eq!(gw.metric(MISSES).await, 0.0);
}

#[tokio::test]
async fn the_start_up_sweep_removes_a_pool_left_by_an_earlier_process() {
    let fx = Repos::new();
    let jobs = fx.root.path().join("jobs");
    let leftover = jobs.join(".pool/ws-0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&leftover).expect("leftover");
    std::fs::write(leftover.join("secret"), "decrypted").expect("file");

    let provisioner = claude_gateway::workspace::GitProvisioner::new(
        claude_gateway::workspace::WorkspaceConfig {
            base_dir: Some(fx.base.clone()),
            jobs_dir: jobs.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("new");

    assert!(!leftover.exists(), "the earlier pool was left in place");
    assert!(!provisioner.is_scratch());
}

/// What a run sees of its checkout, printed between markers by the Bash tool: every entry (type
/// and mode, objects counted), whether all are the run's own, the contents of `.git`'s small
/// files, the hooks, refs, stash, config, index and status. Two fresh checkouts print the same.
const VIEW: &str = "echo VIEW-BEGIN; \
    find . -path ./.git/objects -prune -o -printf '%P %y %m\\n' | sort; \
    echo objects $(find .git/objects -type f | wc -l); \
    echo foreign $(find . ! -user \"$(id -u)\" ! -links +1 | wc -l); \
    for f in .git/HEAD .git/config .git/packed-refs .git/info/exclude .git/description; do echo \"== $f\"; cat $f; done; \
    sha256sum .git/hooks/* | sort; \
    git for-each-ref --format='%(refname) %(objectname)'; \
    git stash list; git ls-files -s --debug | grep -v 'ctime\\|mtime\\|dev:\\|uid:\\|size:'; \
    git status --porcelain=v1 --ignored --untracked-files=all; \
    echo VIEW-END";

/// After the view: what would run a planted hook or fsmonitor command (git commit, checkout,
/// status); a planted one says `HOOK-RAN`.
const TRIGGERS: &str = "git status >/dev/null 2>&1; \
    git -c user.name=probe -c user.email=probe@example.com commit --allow-empty -qm probe 2>&1; \
    git checkout -q -b probe-branch 2>&1; git checkout -q - 2>&1; echo TRIGGERS-DONE";

/// The view part of a Bash tool's output.
fn view_of(output: &str) -> String {
    let start = output
        .find("VIEW-BEGIN")
        .unwrap_or_else(|| panic!("no view in {output}"));
    let end = output
        .find("VIEW-END")
        .unwrap_or_else(|| panic!("no view end in {output}"));
    output[start..end].to_owned()
}

/// Runs `command` with the real CLI's Bash tool and answers what it printed.
async fn bash(gw: &Gateway, command: &str) -> String {
    let body: Value = json(gw.chat(&format!("[[mock:bash {command}]]")).await).await;
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {body}"))
        .to_owned()
}

const RECYCLED: &str = "claude_gateway_workspace_checkout_seconds_count{by=\"recycle\"}";
const POOL_CLONES: &str = "claude_gateway_workspace_checkout_seconds_count{by=\"pool\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_tampers_with_its_checkout_leaves_no_trace_for_the_next_run() {
    let fx = Repos::seeded(
        "main",
        [
            ("README.md", "# the repository\n"),
            (".gitignore", "build/\n"),
            ("src/lib.rs", "pub fn answer() -> u32 { 42 }\n"),
            ("tools/run.sh", "#!/bin/sh\necho run\n"),
        ],
    );
    let gw = Gateway::builder()
        .base(&fx.base)
        .arg("workspace-pool-size", 1)
        .arg("max-concurrency", 1)
        .arg("openai-compat-agent", "general-purpose")
        .start()
        .await;
    assert_eq!(
        gw.health().await["isolation"],
        "uid",
        "recycling needs per-run uids"
    );
    wait_pool_ready(&gw, 1).await;

    // A fresh checkout, as the first run sees it.
    let first = bash(&gw, &format!("{VIEW}; {TRIGGERS}")).await;
    assert!(first.contains("TRIGGERS-DONE"), "{first}");
    let fresh = view_of(&first);
    wait_pool_ready(&gw, 1).await;

    // Everything the issue lists, and a hook and a monitor command that would run on the next
    // git command.
    let tampered = bash(
        &gw,
        "set -e; echo changed >> README.md; chmod +x src/lib.rs; touch -d 2000-01-01 src/lib.rs; \
         git -c user.name=x -c user.email=x@example.com stash -q; echo again >> README.md; \
         echo untracked > notes.txt; mkdir -p build deep/er && echo object > build/out.o && echo x > deep/er/file; \
         printf '#!/bin/sh\\necho HOOK-RAN >&2\\n' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; \
         cp .git/hooks/pre-commit .git/hooks/post-checkout; cp .git/hooks/pre-commit .git/planted-monitor; \
         git config core.fsmonitor \"$PWD/.git/planted-monitor\"; git config user.name planted; \
         git branch planted; git tag planted-tag; git update-ref refs/planted HEAD; \
         git update-index --chmod=+x README.md; git add notes.txt; \
         ln -s /etc/passwd planted-link; mkfifo planted-fifo; chmod 0777 . src; \
         echo TAMPERED",
    )
    .await;
    assert!(
        tampered.contains("TAMPERED"),
        "the tampering run failed: {tampered}"
    );
    wait_pool_ready(&gw, 1).await;
    assert!(
        gw.metric(RECYCLED).await >= 2.0,
        "the used checkouts were not recycled"
    );

    let later = bash(&gw, &format!("{VIEW}; {TRIGGERS}")).await;
    assert_eq!(
        view_of(&later),
        fresh,
        "the next run sees what the tampering run left"
    );
    assert!(
        !later.contains("HOOK-RAN"),
        "a planted hook ran in the next run: {later}"
    );
    assert!(later.contains("TRIGGERS-DONE"), "{later}");
    // Every run took a recycled checkout: the pool cloned once, at start-up.
    assert_eq!(gw.metric(HITS).await, 3.0);
    assert_eq!(gw.metric(POOL_CLONES).await, 1.0);
    gw.wait_workspaces_gone().await;
}

#[tokio::test]
async fn with_recycling_off_every_used_checkout_is_removed_and_the_pool_clones() {
    let fx = Repos::new();
    let gw = pooled_gateway(&fx, 1, &[("workspace-pool-recycle", "false")]).await;
    for _ in 0..2 {
        wait_pool_ready(&gw, 1).await;
        assert_eq!(probe(&gw).await.claimed, "no");
    }
    assert_eq!(gw.metric(HITS).await, 2.0);
    wait_pool_ready(&gw, 1).await;
    // Three clones (the start-up fill and one after each run), no recycle.
    assert_eq!(gw.metric(POOL_CLONES).await, 3.0);
    assert_eq!(gw.metric(RECYCLED).await, 0.0);
    gw.wait_workspaces_gone().await;
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted (lazily) when dropped: a
/// `JOBS_DIR` whose free space a test can take away and give back.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    async fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        common::run_tool(
            "mounting a tmpfs (needs root)",
            secs(30),
            tokio::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir.path()),
        )
        .await;
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes, as the pool reads them.
    fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(self.path()).expect("statvfs");
        #[allow(clippy::useless_conversion)]
        let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
        free
    }

    /// The pool's entries whose names start with `prefix` (`ws-`, `template-`).
    fn pooled(&self, prefix: &str) -> usize {
        std::fs::read_dir(self.path().join(".pool"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn when_jobs_dir_runs_low_the_pool_gives_back_its_checkouts_and_template_and_refills_later() {
    let fx = Repos::new();
    let disk = SmallDisk::mount(96).await;
    let gw = Gateway::builder()
        .base(&fx.base)
        .fake("workspace-probe.sh")
        .jobs_dir(disk.path())
        .arg("workspace-pool-size", 1)
        .arg("workspace-pool-min-free-mb", 32)
        .start()
        .await;
    wait_pool_ready(&gw, 1).await;
    // A run's checkout comes back recycled, copying from the template.
    probe(&gw).await;
    eventually("the used checkout is recycled", secs(30), || async {
        (gw.metric(RECYCLED).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(disk.pooled("template-"), 1, "no template on disk");

    // Take the free space away: below the 32 MiB reserve.
    let filler = disk.path().join("filler");
    let take = disk.free() - 16 * 1024 * 1024;
    std::fs::write(&filler, vec![0u8; usize::try_from(take).unwrap()]).expect("filler");
    eventually(
        "the pool gives back its checkout and its template",
        secs(30),
        || async { (disk.pooled("ws-") + disk.pooled("template-") == 0).then_some(()) },
    )
    .await;
    // Runs still get checkouts meanwhile, and theirs is removed rather than recycled.
    assert_eq!(probe(&gw).await.claimed, "no");
    eventually("the used checkout is removed", secs(30), || async {
        let left = common::workspaces_in(disk.path());
        (left.iter().all(|p| *p == filler) && disk.pooled("ws-") == 0).then_some(())
    })
    .await;
    assert_eq!(gw.metric(RECYCLED).await, 1.0);
    assert_eq!(disk.pooled("template-"), 0);

    // Space back: the pool fills again, and the next recycle makes a template again.
    std::fs::remove_file(&filler).expect("filler removed");
    wait_pool_ready(&gw, 1).await;
    probe(&gw).await;
    eventually("a checkout is recycled again", secs(30), || async {
        (gw.metric(RECYCLED).await == 2.0).then_some(())
    })
    .await;
    assert_eq!(
        disk.pooled("template-"),
        1,
        "no template once space is back"
    );
    drop(gw);
}
