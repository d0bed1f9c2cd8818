//! What a user of the gateway would see, checked for real: contained processes are started, the
//! tests look at `/proc` and the filesystem the way an operator would.
//!
//! Uid-mode tests need root (CI runs as root) and fail, never skip, without it. Each test has its
//! own uid range (far from every other test's), its own lock directory and its own instance key, so
//! tests running in parallel threads or processes never touch each other's runs. Nothing waits by
//! sleeping: every wait is a bounded poll with a deadline.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::cell::{Containment, LeaseError};
use super::dirs;
use super::mode::Mode;
use super::procfs;
use super::reap::MARKER_VAR;
use super::settings::{ContainSettings, IsolationSetting, RunUidRange};
use super::*;

/// The uid range of test number `test`: a thousand uids of its own, far above any account.
fn range_for(test: u32, count: u32) -> RunUidRange {
    RunUidRange::new(3_000_000 + test * 1000, count).expect("valid test range")
}

/// Settings for test number `test`, with its own lock directory and instance key.
fn settings_for(
    test: u32,
    count: u32,
    lock_dir: &Path,
    isolation: IsolationSetting,
) -> ContainSettings {
    ContainSettings {
        isolation,
        uid_range: range_for(test, count),
        lock_dir: lock_dir.to_path_buf(),
        cgroup: CgroupSetting::default(),
        instance_key: format!("test{test}"),
    }
}

/// As root: the uid-mode settings of test number `test` (`count` uids), over a fresh lock
/// directory that lives as long as the first item.
fn uid_settings(test: u32, count: u32) -> (tempfile::TempDir, ContainSettings) {
    require_root();
    let locks = tempfile::tempdir().expect("lock dir");
    let settings = settings_for(test, count, locks.path(), IsolationSetting::Uid);
    (locks, settings)
}

/// Fails (never skips) a test that needs root when not run as root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs processes under per-run uids and needs root (CI runs as root); \
         run it as root, e.g. `sudo -E cargo test --lib contain`"
    );
}

/// A uid-mode containment for test `test`, with `count` uids and a fresh lock directory.
fn uid_containment(test: u32, count: u32) -> (Containment, tempfile::TempDir) {
    let (locks, settings) = uid_settings(test, count);
    let containment = Containment::new(&settings).expect("uid mode as root");
    assert_eq!(containment.mode(), Mode::Uid);
    assert_eq!(containment.mode_name(), "uid");
    (containment, locks)
}

/// A forced process-mode containment for test `test` (works with or without root).
fn process_containment(test: u32) -> Containment {
    let unused = std::env::temp_dir().join("claude-gateway-contain-unused");
    let containment = Containment::new(&settings_for(test, 1, &unused, IsolationSetting::Process))
        .expect("process mode");
    assert_eq!(containment.mode(), Mode::Process);
    assert_eq!(containment.mode_name(), "process");
    containment
}

/// A temporary directory that every uid may traverse (tempdirs are 0700 root), so that what a
/// test checks is the mode of the file or directory inside, not of the tempdir.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// `sh -c script` in the run, with a PATH, in `cwd`, output captured.
/// Starts a daemon in `cell`: a `sleep` in a session of its own, which outlives the shell.
async fn start_daemon(cell: &RunCell) {
    let out = sh(cell, "setsid sleep 300 >/dev/null 2>&1 &", Path::new("/"))
        .output()
        .await
        .expect("start a daemon");
    assert!(out.status.success());
}

fn sh(cell: &RunCell, script: &str, cwd: &Path) -> RunCommand {
    let mut command = cell.command("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir(cwd)
        .stdout(Io::Piped)
        .stderr(Io::Piped);
    command
}

/// Live processes that belong to the cell: by uid in uid mode, by marker in process mode.
fn live_processes_of(cell: &RunCell) -> Vec<i32> {
    match cell.uid() {
        Some(uid) => procfs::live_pids_of_uid(uid).expect("/proc"),
        None => live_marked(cell.marker_env().1),
    }
}

/// Live processes whose marker is exactly `marker`.
fn live_marked(marker: &str) -> Vec<i32> {
    procfs::processes()
        .expect("/proc")
        .into_iter()
        .filter(|p| !p.dead)
        .filter(|p| {
            matches!(procfs::environ_var(p.pid, MARKER_VAR), Ok(Some(v)) if v == marker.as_bytes())
        })
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    procfs::process(pid).is_some_and(|p| !p.dead)
}

/// Polls `check` every 10 ms until it holds, failing the test after 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a run can leave behind: a `setsid` session, a `nohup` job, a double-forked daemon, a
/// loop writing into the workspace, and the shell itself still running.
const ESCAPES: &str = "\
setsid sleep 300 &
nohup sleep 300 >/dev/null 2>&1 &
sh -c '(sleep 300 &) &'
(while :; do echo tick >> loop.log; sleep 0.01; done) &
exec sleep 300";

/// The common body of the kill-all tests: start [`ESCAPES`] in the run, see it all running, kill
/// the run, see nothing of it left and the workspace removable.
async fn kill_all_stops_everything(cell: RunCell) {
    let workspace = open_tempdir();
    let dir = workspace.path().join("ws");
    std::fs::create_dir(&dir).expect("workspace");
    cell.hand_over(&dir).expect("hand over");
    let mut command = sh(&cell, ESCAPES, &dir);
    let mut leader = Supervised::spawn_run(&mut command).expect("spawn");

    // setsid'd sleep, nohup'd sleep, daemonised sleep, loop shell, exec'd sleep: at least five.
    eventually("the run's five processes run and the loop writes", || {
        live_processes_of(&cell).len() >= 5
            && std::fs::metadata(dir.join("loop.log")).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let escaped_group: Vec<i32> = live_processes_of(&cell)
        .into_iter()
        .filter(|pid| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid)))
                .is_ok_and(|pgid| pgid != leader.pgid())
        })
        .collect();
    assert!(
        !escaped_group.is_empty(),
        "the setsid'd sleep should have left the process group, or this test proves nothing"
    );

    let started = Instant::now();
    let had_leftovers = cell.kill_all().await.expect("kill-all succeeds");
    let took = started.elapsed();
    assert!(had_leftovers, "kill-all found nothing to kill");
    assert!(took < Duration::from_secs(2), "kill-all took {took:?}");
    assert_eq!(
        live_processes_of(&cell),
        Vec::<i32>::new(),
        "nothing of the run is alive"
    );
    for pid in escaped_group {
        assert!(
            !alive(pid),
            "process {pid}, outside the run's group, survived"
        );
    }
    leader
        .wait()
        .await
        .expect("the leader was killed and reaped");

    remove_tree(workspace.path()).expect("the workspace can be removed");
    assert!(!workspace.path().exists());
    cell.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_kill_all_stops_setsid_nohup_daemons_and_loops() {
    let (containment, _locks) = uid_containment(1, 4);
    let cell = containment.lease().await.expect("lease");
    assert!(range_for(1, 4).contains(cell.uid().expect("a uid")));
    kill_all_stops_everything(cell).await;
}

/// [`uid_containment`] with cgroups off: runs are found and killed through `/proc`.
fn uid_containment_without_cgroups(test: u32, count: u32) -> (Containment, tempfile::TempDir) {
    let (locks, settings) = uid_settings(test, count);
    let settings = ContainSettings {
        cgroup: CgroupSetting::Off,
        ..settings
    };
    let containment = Containment::new(&settings).expect("uid mode as root");
    assert_eq!(containment.cgroup_parent(), None);
    (containment, locks)
}

/// The cgroup v2 directory a process is in, from its `/proc/<pid>/cgroup`.
fn cgroup_of(pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

#[tokio::test]
async fn uid_mode_without_cgroups_kill_all_stops_setsid_nohup_daemons_and_loops() {
    let (containment, _locks) = uid_containment_without_cgroups(20, 4);
    let cell = containment.lease().await.expect("lease");
    kill_all_stops_everything(cell).await;
}

#[tokio::test]
async fn process_mode_without_cgroups_kill_all_stops_setsid_nohup_daemons_and_loops() {
    let unused = std::env::temp_dir().join("claude-gateway-contain-unused");
    let settings = ContainSettings {
        cgroup: CgroupSetting::Off,
        ..settings_for(21, 1, &unused, IsolationSetting::Process)
    };
    let containment = Containment::new(&settings).expect("process mode");
    assert_eq!(containment.cgroup_parent(), None);
    kill_all_stops_everything(containment.lease().await.expect("lease")).await;
}

#[tokio::test]
async fn as_root_every_process_of_a_run_is_in_its_cgroup_and_cannot_leave_it() {
    let (containment, _locks) = uid_containment(22, 2);
    let parent = containment
        .cgroup_parent()
        .expect("as root on a cgroup v2 host, runs get cgroups (RUN_CGROUP=auto)")
        .to_path_buf();
    let cell = containment.lease().await.expect("lease");
    let workspace = open_tempdir();
    // The run tries to move itself to its parent cgroup, and to make a cgroup of its own.
    let script = format!(
        "setsid sleep 300 >/dev/null 2>&1 &\n\
         if echo $$ > {procs} 2>/dev/null; then echo moved; else echo refused; fi\n\
         if mkdir {parent}/escape 2>/dev/null; then echo made; else echo refused; fi",
        procs = parent.join("cgroup.procs").display(),
        parent = parent.display(),
    );
    let out = sh(&cell, &script, workspace.path())
        .output()
        .await
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "refused\nrefused\n");
    eventually("the setsid'd sleep runs", || {
        live_processes_of(&cell).len() == 1
    })
    .await;
    let daemon = live_processes_of(&cell)[0];
    let group = cgroup_of(daemon).expect("the daemon's cgroup");
    assert!(
        group.contains("/claude-gateway."),
        "the daemon is in {group}, not in its run's cgroup"
    );
    let dir = parent.join(group.rsplit('/').next().unwrap());
    assert!(dir.is_dir(), "{} is the run's cgroup", dir.display());

    assert!(cell.kill_all().await.expect("kill-all"), "found the daemon");
    assert!(!alive(daemon));
    cell.release().await.expect("release");
    assert!(!dir.exists(), "the run's cgroup is removed at its end");
}

#[tokio::test]
async fn recover_kills_and_removes_the_cgroups_a_crashed_gateway_left() {
    let (_locks, settings) = uid_settings(23, 2);
    // A gateway process that has since died: a tag no live process has.
    let crashed =
        Containment::with_mode(Mode::Uid, &settings, "1-1".into()).expect("crashed gateway");
    let parent = crashed
        .cgroup_parent()
        .expect("cgroups as root")
        .to_path_buf();
    let orphan = crashed.lease().await.expect("lease");
    start_daemon(&orphan).await;
    eventually("the daemon runs", || live_processes_of(&orphan).len() == 1).await;
    let daemon = live_processes_of(&orphan)[0];
    let dir = parent.join(cgroup_of(daemon).unwrap().rsplit('/').next().unwrap());
    orphan.abandon();
    drop(crashed);

    let restarted = Containment::new(&settings).expect("the next start");
    let recovery = restarted.recover().await;
    assert!(recovery.failures.is_empty(), "{:?}", recovery.failures);
    assert!(
        !alive(daemon),
        "the crashed gateway's daemon survived recovery"
    );
    assert!(!dir.exists(), "the crashed run's cgroup is removed");
    assert!(recovery.killed >= 1);
}

#[tokio::test]
async fn a_uid_whose_holder_crashed_is_searched_again_and_a_clean_one_is_not() {
    let (containment, locks) = uid_containment_without_cgroups(24, 1);
    let uid = range_for(24, 1).first();
    let lock_file = locks.path().join(format!("uid-{uid}.lock"));
    let state = || std::fs::read(&lock_file).expect("lock file")[0];

    let cell = containment.lease().await.expect("lease");
    assert_eq!(state(), b'h', "a held uid is marked held");
    cell.release().await.expect("release");
    assert_eq!(state(), b'c', "a clean end is recorded");

    // A crash: the holder's daemon stays, its lock goes, the file still says held.
    let crashed = containment.lease().await.expect("lease");
    start_daemon(&crashed).await;
    eventually("the daemon runs", || {
        procfs::live_pids_of_uid(uid).unwrap().len() == 1
    })
    .await;
    let daemon = procfs::live_pids_of_uid(uid).unwrap()[0];
    crashed.abandon();
    assert_eq!(state(), b'h');

    let next = containment.lease().await.expect("lease");
    assert_eq!(next.uid(), Some(uid));
    assert!(
        !alive(daemon),
        "the next lease killed the crashed holder's daemon"
    );
    next.release().await.expect("release");
}

#[tokio::test]
async fn process_mode_kill_all_stops_setsid_nohup_daemons_and_loops() {
    let containment = process_containment(2);
    let cell = containment.lease().await.expect("lease");
    assert_eq!(cell.uid(), None);
    kill_all_stops_everything(cell).await;
}

#[tokio::test]
async fn uid_mode_run_cannot_read_a_root_only_file() {
    let (containment, _locks) = uid_containment(3, 2);
    let cell = containment.lease().await.expect("lease");
    let dir = open_tempdir();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cret").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let out = sh(&cell, &format!("cat {}", secret.display()), Path::new("/"))
        .output()
        .await
        .expect("run cat");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    cell.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_run_cannot_signal_the_gateway_or_its_processes() {
    let (containment, _locks) = uid_containment(4, 2);
    let cell = containment.lease().await.expect("lease");
    let mut sleeper = gateway_command("sleep");
    sleeper.arg("300").stdin(Stdio::null());
    let mut root_sleep = Supervised::spawn(&mut sleeper).expect("root sleep");
    let targets = [root_sleep.pgid().as_raw(), std::process::id() as i32];

    for pid in targets {
        let out = sh(&cell, &format!("kill -0 {pid}"), Path::new("/"))
            .output()
            .await
            .expect("run kill");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "the run could signal root process {pid}"
        );
        assert!(
            stderr.contains("not permitted"),
            "expected EPERM for {pid}: {stderr}"
        );
    }
    // And the run's own kill-all never reaches them either.
    assert!(
        !cell.kill_all().await.expect("kill-all"),
        "the run had nothing left"
    );
    assert!(
        alive(root_sleep.pgid().as_raw()),
        "kill-all of a run hit a root process"
    );
    root_sleep.kill();
    root_sleep.wait().await.expect("reap");
    cell.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_run_cannot_read_another_runs_home() {
    let (containment, _locks) = uid_containment(5, 2);
    let first = containment.lease().await.expect("lease");
    let second = containment.lease().await.expect("lease");
    let dir = open_tempdir();
    let home = dir.path().join("home-first");
    first.make_home(&home).expect("home");
    let meta = std::fs::metadata(&home).expect("home exists");
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (first.uid().unwrap(), first.uid().unwrap())
    );

    let wrote = sh(&first, "echo private > note && cat note", &home)
        .output()
        .await
        .expect("first writes");
    assert!(
        wrote.status.success(),
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let out = sh(
        &second,
        &format!("ls {0}; cat {0}/note", home.display()),
        Path::new("/"),
    )
    .output()
    .await
    .expect("second reads");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("private"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    first.release().await.expect("release");
    second.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_leases_are_exclusive_across_gateway_processes() {
    let (_locks, settings) = uid_settings(6, 2);
    // Two containments on one lock directory stand for two gateway processes on one host.
    let gateway_a = Containment::new(&settings).expect("a");
    let gateway_b = Containment::new(&settings).expect("b");
    let one = gateway_a.lease().await.expect("first lease");
    let two = gateway_b.lease().await.expect("second lease");
    assert_ne!(one.uid(), two.uid(), "two runs got the same uid");
    let err = gateway_a.lease().await.expect_err("the range is used up");
    assert!(
        matches!(&err, LeaseError::Exhausted(e) if e.busy == 2),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("no free run uid in 3006000-3006001: 2 in use"),
        "{err}"
    );
    let freed = one.uid();
    one.release().await.expect("release");
    let again = gateway_b
        .lease()
        .await
        .expect("a released uid is free again");
    assert_eq!(again.uid(), freed);
    two.release().await.expect("release");
    again.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_kill_all_of_one_run_spares_another() {
    let (containment, _locks) = uid_containment(7, 2);
    let doomed = containment.lease().await.expect("lease");
    let spared = containment.lease().await.expect("lease");
    let mut started = Vec::new();
    for cell in [&doomed, &spared] {
        let mut command = sh(cell, "setsid sleep 300 & exec sleep 300", Path::new("/"));
        started.push(Supervised::spawn_run(&mut command).expect("spawn"));
    }
    eventually("both runs have their two sleeps", || {
        live_processes_of(&doomed).len() == 2 && live_processes_of(&spared).len() == 2
    })
    .await;
    let survivors = live_processes_of(&spared);

    doomed.kill_all().await.expect("kill-all");
    assert!(live_processes_of(&doomed).is_empty());
    for pid in survivors {
        assert!(alive(pid), "kill-all of one run killed {pid} of another");
    }
    let spared_uid = spared.uid().unwrap();
    spared.release().await.expect("release");
    assert!(procfs::live_pids_of_uid(spared_uid).unwrap().is_empty());
    doomed.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_recover_kills_what_a_crashed_gateway_left_and_spares_live_runs() {
    let (_locks, settings) = uid_settings(8, 3);
    let crashed = Containment::new(&settings).expect("crashed gateway");
    let living = Containment::new(&settings).expect("living gateway");

    let orphan = crashed.lease().await.expect("lease");
    let orphan_uid = orphan.uid().unwrap();
    let script = "setsid sleep 300 >/dev/null 2>&1 & nohup sleep 300 >/dev/null 2>&1 &";
    let daemon = sh(&orphan, script, Path::new("/"))
        .output()
        .await
        .expect("start the daemons");
    assert!(daemon.status.success());
    let busy = living.lease().await.expect("lease");
    let mut command = sh(&busy, "exec sleep 300", Path::new("/"));
    let _busy_leader = Supervised::spawn_run(&mut command).expect("spawn");
    eventually("the daemons and the live run's sleep run", || {
        procfs::live_pids_of_uid(orphan_uid).unwrap().len() == 2
            && live_processes_of(&busy).len() == 1
    })
    .await;
    // kill -9 of the gateway: its locks vanish, its runs' processes stay.
    let orphan_group = orphan.cgroup_dir();
    orphan.abandon();
    drop(crashed);

    let restarted = Containment::new(&settings).expect("the next start");
    let recovery = restarted.recover().await;
    assert!(recovery.failures.is_empty(), "{:?}", recovery.failures);
    assert_eq!(recovery.killed, 2);
    assert_eq!(
        recovery.busy, 1,
        "the live gateway's run is counted, not killed"
    );
    assert!(procfs::live_pids_of_uid(orphan_uid).unwrap().is_empty());
    assert_eq!(
        live_processes_of(&busy).len(),
        1,
        "recovery killed a live run"
    );
    busy.release().await.expect("release");
    // This test process plays the crashed gateway and is still alive, so no recovery removes the
    // orphan's (now empty) cgroup.
    if let Some(dir) = orphan_group {
        std::fs::remove_dir(dir).expect("the orphan's emptied cgroup");
    }
}

#[tokio::test]
async fn uid_mode_lease_kills_leftovers_under_the_uid_it_takes() {
    let (_locks, settings) = uid_settings(9, 1);
    let uid = settings.uid_range.first();
    // A leftover started directly under the uid, as an older gateway version might have.
    let mut leftover = gateway_command("sleep");
    leftover
        .arg("300")
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stdin(Stdio::null());
    let mut leftover = Supervised::spawn(&mut leftover).expect("spawn");
    let pid = leftover.pgid().as_raw();
    eventually("the leftover runs as the uid", || {
        procfs::live_pids_of_uid(uid).unwrap() == vec![pid]
    })
    .await;

    let containment = Containment::new(&settings).expect("uid mode");
    let cell = containment.lease().await.expect("lease");
    assert_eq!(cell.uid(), Some(uid));
    assert!(
        !alive(pid),
        "the lease handed out a uid with a live leftover"
    );
    leftover.wait().await.expect("reap");
    cell.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_never_uses_the_uid_of_an_account() {
    require_root();
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd lookup")
        .expect("the host has a nobody account");
    let uid = nobody.uid.as_raw();
    let locks = tempfile::tempdir().expect("lock dir");
    let settings = ContainSettings {
        uid_range: RunUidRange::new(uid, 1).expect("range"),
        ..settings_for(10, 1, locks.path(), IsolationSetting::Uid)
    };
    let containment = Containment::new(&settings).expect("uid mode");
    let err = containment
        .lease()
        .await
        .expect_err("nobody's uid is refused");
    assert!(
        matches!(&err, LeaseError::Exhausted(e) if e.accounts == 1),
        "{err}"
    );
}

#[tokio::test]
async fn uid_mode_process_has_the_run_identity_no_groups_and_no_new_privileges() {
    let (containment, _locks) = uid_containment(11, 1);
    let cell = containment.lease().await.expect("lease");
    let uid = cell.uid().unwrap();
    let out = sh(&cell, "cat /proc/self/status; env", Path::new("/"))
        .env("HOME", "/nonexistent")
        .output()
        .await
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let id = uid.to_string();
    assert_eq!(line("Uid:"), vec![id.as_str(); 4]);
    assert_eq!(line("Gid:"), vec![id.as_str(); 4]);
    assert_eq!(
        line("Groups:"),
        Vec::<&str>::new(),
        "supplementary groups were kept"
    );
    assert_eq!(line("NoNewPrivs:"), vec!["1"]);
    // Only what the caller set, plus the marker: nothing of the gateway's environment.
    let marker = format!("{MARKER_VAR}={}", cell.marker_env().1);
    assert!(text.lines().any(|l| l == marker), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("CARGO")), "{text}");
    cell.release().await.expect("release");
}

#[tokio::test]
async fn uid_mode_lock_dir_is_made_private_and_refused_when_others_could_write() {
    require_root();
    let parent = tempfile::tempdir().expect("tempdir");
    let lock_dir = parent.path().join("locks");
    let settings = settings_for(12, 1, &lock_dir, IsolationSetting::Uid);
    Containment::new(&settings).expect("creates the directory");
    assert_eq!(std::fs::metadata(&lock_dir).unwrap().mode() & 0o7777, 0o700);

    std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Containment::new(&settings).expect_err("world-writable");
    assert!(
        err.to_string()
            .contains("writable by group or others (mode 0777)"),
        "{err}"
    );

    std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&lock_dir, Some(4242), None).unwrap();
    let err = Containment::new(&settings).expect_err("owned by someone else");
    assert!(err.to_string().contains("is owned by uid 4242"), "{err}");
}

#[tokio::test]
async fn process_mode_recover_kills_only_orphans_of_this_instance() {
    let unused = std::env::temp_dir().join("claude-gateway-contain-unused");
    let this_instance = settings_for(13, 1, &unused, IsolationSetting::Process);
    let other_instance = settings_for(14, 1, &unused, IsolationSetting::Process);
    // pid 4194305 is above the kernel's highest pid: a gateway that cannot be running.
    let dead = "4194305-1".to_string();
    let init_start = procfs::start_time(1).expect("pid 1");
    let live = format!("1-{init_start}");
    let crashed = Containment::with_mode(Mode::Process, &this_instance, dead.clone()).unwrap();
    let sibling = Containment::with_mode(Mode::Process, &this_instance, live).unwrap();
    let stranger = Containment::with_mode(Mode::Process, &other_instance, dead).unwrap();

    let mut cells = Vec::new();
    for containment in [&crashed, &sibling, &stranger] {
        let cell = containment.lease().await.expect("lease");
        start_daemon(&cell).await;
        cells.push(cell);
    }
    eventually("the three daemons run", || {
        cells.iter().all(|cell| live_processes_of(cell).len() == 1)
    })
    .await;
    let [orphan, sibling_run, stranger_run] = <[RunCell; 3]>::try_from(cells).unwrap();
    let orphan_marker = orphan.marker_env().1.to_owned();
    orphan.abandon();

    let restarted = Containment::new(&this_instance).expect("process mode");
    let recovery = restarted.recover().await;
    assert!(recovery.failures.is_empty(), "{:?}", recovery.failures);
    assert_eq!(recovery.killed, 1);
    assert!(
        live_marked(&orphan_marker).is_empty(),
        "the orphan survived recovery"
    );
    assert_eq!(
        live_processes_of(&sibling_run).len(),
        1,
        "a live gateway's run was killed"
    );
    assert_eq!(
        live_processes_of(&stranger_run).len(),
        1,
        "another instance's run was killed"
    );
    sibling_run.release().await.expect("release");
    stranger_run.release().await.expect("release");
}

#[tokio::test]
async fn dropping_a_cell_kills_its_run() {
    let containment = process_containment(15);
    let cell = containment.lease().await.expect("lease");
    let marker = cell.marker_env().1.to_owned();
    start_daemon(&cell).await;
    eventually("the daemon runs", || live_marked(&marker).len() == 1).await;
    drop(cell);
    eventually("the dropped run's daemon is gone", || {
        live_marked(&marker).is_empty()
    })
    .await;
}

#[tokio::test]
async fn supervised_child_takes_its_group_along_when_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild");
    let mut command = gateway_command("sh");
    command
        .arg("-c")
        .arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()))
        .stdin(Stdio::null());
    let child = Supervised::spawn(&mut command).expect("spawn");
    eventually("the grandchild's pid is written", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    drop(child);
    eventually("the grandchild is dead", || !alive(grandchild)).await;
}

#[tokio::test]
async fn capped_reader_keeps_the_cap_and_drains_the_rest() {
    let mut command = gateway_command("sh");
    command
        .arg("-c")
        .arg("head -c 1000000 /dev/zero | tr '\\0' a; echo done >&2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Supervised::spawn(&mut command).expect("spawn");
    let stdout = child.take_stdout().expect("piped");
    let stderr = child.take_stderr().expect("piped");
    let (out, err, status) = tokio::join!(
        read_capped(stdout, 1000),
        read_capped(stderr, 1000),
        child.wait()
    );
    let out = out.expect("read");
    assert_eq!(out.kept, vec![b'a'; 1000]);
    assert_eq!(out.total, 1_000_000);
    assert!(out.truncated());
    assert_eq!(err.expect("read").lossy(), "done\n");
    assert!(
        status.expect("wait").success(),
        "the child was never blocked"
    );
}

#[test]
fn hand_over_chowns_the_tree_and_never_follows_links() {
    require_root();
    let outside = open_tempdir();
    let precious = outside.path().join("precious");
    std::fs::write(&precious, "root's").unwrap();
    let tree = outside.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/file"), "x").unwrap();
    std::os::unix::fs::symlink(&precious, tree.join("a/link-to-file")).unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.join("link-to-dir")).unwrap();

    let uid = range_for(16, 1).first();
    dirs::chown_tree(&tree, uid).expect("hand over");
    for path in ["", "a", "a/b", "a/b/file", "a/link-to-file", "link-to-dir"] {
        let meta = std::fs::symlink_metadata(tree.join(path)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, uid),
            "{path:?} was not handed over"
        );
    }
    assert_eq!(std::fs::metadata(&tree).unwrap().mode() & 0o7777, 0o700);
    let kept = std::fs::metadata(&precious).unwrap();
    assert_eq!(kept.uid(), 0, "a symlink was followed out of the tree");
    assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
}

#[test]
fn hand_over_leaves_files_shared_with_the_base_to_the_gateway() {
    require_root();
    let outside = open_tempdir();
    let base_object = outside.path().join("base-object");
    std::fs::write(&base_object, "the base's object").unwrap();
    std::fs::set_permissions(&base_object, std::fs::Permissions::from_mode(0o444)).unwrap();
    let tree = outside.path().join("tree");
    std::fs::create_dir_all(tree.join(".git/objects")).unwrap();
    // What `git clone --local` does with the base's objects.
    std::fs::hard_link(&base_object, tree.join(".git/objects/pack")).unwrap();
    std::fs::write(tree.join("README"), "the run's own").unwrap();

    let uid = range_for(40, 1).first();
    dirs::chown_tree(&tree, uid).expect("hand over");
    assert_eq!(std::fs::metadata(tree.join("README")).unwrap().uid(), uid);
    let shared = std::fs::metadata(&base_object).unwrap();
    assert_eq!(shared.uid(), 0, "the base's object was given to the run");
    assert_eq!(shared.mode() & 0o777, 0o444);
}

#[test]
fn credentials_are_copied_private_to_the_run() {
    require_root();
    let dir = open_tempdir();
    let source = dir.path().join("operator.json");
    std::fs::write(&source, "{\"token\":1}").unwrap();
    let uid = range_for(17, 1).first();
    let home = dir.path().join("home");
    dirs::make_private_dir(&home, Some(uid)).unwrap();
    // A link the run might have planted where the file goes is replaced, not written through.
    std::fs::create_dir(home.join(".claude")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("victim"),
        home.join(".claude/.credentials.json"),
    )
    .unwrap();

    assert!(dirs::install_credentials(&source, &home, Some(uid)).unwrap());
    let copied = home.join(".claude/.credentials.json");
    let meta = std::fs::symlink_metadata(&copied).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, uid, uid)
    );
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "{\"token\":1}");
    let claude = std::fs::metadata(home.join(".claude")).unwrap();
    assert_eq!((claude.mode() & 0o7777, claude.uid()), (0o700, uid));
    assert!(!dir.path().join("victim").exists());
    let missing = dir.path().join("missing.json");
    assert!(!dirs::install_credentials(&missing, &home, Some(uid)).unwrap());
}

#[test]
fn remove_tree_removes_locked_down_trees_but_not_what_links_point_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = dir.path().join("keep");
    std::fs::write(&keep, "kept").unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/closed")).unwrap();
    std::fs::write(tree.join("a/closed/f"), "x").unwrap();
    std::os::unix::fs::symlink(&keep, tree.join("a/link")).unwrap();
    std::fs::set_permissions(
        tree.join("a/closed"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(tree.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();

    remove_tree(&tree).expect("removed");
    assert!(!tree.exists());
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "kept");
    remove_tree(&tree).expect("a missing tree is fine");
}

#[test]
fn constructor_picks_uid_mode_as_root_and_process_mode_when_forced() {
    // The decision itself is unit-tested in `mode`; here the whole constructor, as root or not.
    let unused: PathBuf = std::env::temp_dir().join("claude-gateway-contain-unused");
    let settings = settings_for(18, 1, &unused, IsolationSetting::Process);
    assert_eq!(Containment::new(&settings).unwrap().mode(), Mode::Process);
    let locks = tempfile::tempdir().unwrap();
    let auto = ContainSettings {
        isolation: IsolationSetting::Auto,
        lock_dir: locks.path().join("locks"),
        ..settings
    };
    let expected = if nix::unistd::geteuid().is_root() {
        Mode::Uid
    } else {
        Mode::Process
    };
    assert_eq!(Containment::new(&auto).unwrap().mode(), expected);
}

#[tokio::test]
async fn a_child_born_in_its_run_cgroup_behaves_as_a_spawned_one() {
    use std::os::unix::process::ExitStatusExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (containment, _locks) = uid_containment(31, 1);
    assert!(
        containment.cgroup_parent().is_some(),
        "as root on a cgroup v2 host, runs get cgroups (RUN_CGROUP=auto)"
    );
    let cell = containment.lease().await.expect("lease");
    let group = cell.cgroup_dir().expect("the run's cgroup");
    let group_name = group.file_name().unwrap().to_string_lossy().into_owned();

    // A bare program name is found in the child's PATH; stdin and stdout are pipes.
    let mut cat = cell.command("cat");
    cat.env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Io::Piped)
        .stdout(Io::Piped);
    let mut child = cat.spawn().expect("spawn cat");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"through the pipes").await.expect("write");
    drop(stdin);
    let mut echoed = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut echoed)
        .await
        .expect("read");
    assert_eq!(echoed, "through the pipes");
    assert!(child.wait().await.expect("wait").success());

    // Its cgroup is the run's from its first instruction; no signal is blocked, and SIGPIPE is
    // not ignored (the gateway ignores it); its exit code comes back.
    let out = sh(
        &cell,
        "cat /proc/self/cgroup /proc/self/status; exit 3",
        Path::new("/"),
    )
    .output()
    .await
    .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&group_name)),
        "not in {group_name}: {text}"
    );
    let mask = |name: &str| {
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim();
        u64::from_str_radix(hex, 16).expect("a hex mask")
    };
    assert_eq!(mask("SigBlk:"), 0, "signals blocked in the child");
    assert_eq!(
        mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored in the child"
    );

    // A child killed by a signal says so.
    let out = sh(&cell, "kill -9 $$", Path::new("/"))
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));

    // A program that cannot be found or run is an error at spawn, as with std.
    let missing = cell
        .command("no-such-program-anywhere")
        .env("PATH", "/usr/bin:/bin")
        .spawn()
        .expect_err("not in PATH");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    let missing = cell
        .command("/nonexistent/program")
        .spawn()
        .expect_err("no such file");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    let not_a_program = cell
        .command("/etc/passwd")
        .spawn()
        .expect_err("not executable");
    assert_eq!(not_a_program.kind(), std::io::ErrorKind::PermissionDenied);
    cell.release().await.expect("release");
    assert!(!group.exists(), "the run's cgroup is removed at its end");
}
