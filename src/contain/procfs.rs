//! Reading `/proc`: which processes exist, whose they are, whether they still run, and which run
//! marker they carry.
//!
//! Everything here is a snapshot that may be stale the moment it is read: a listed process may have
//! exited, and its pid may even belong to a new process. Callers never signal a pid from here
//! directly; they go through a pidfd or through the kernel's own uid check (see [`super::reap`]).

use std::fs;
use std::io;

/// One process as `/proc/<pid>/status` described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcInfo {
    /// Its pid (a thread-group id: `/proc` lists processes, not threads).
    pub(super) pid: i32,
    /// Real, effective and saved uid.
    pub(super) uids: [u32; 3],
    /// Exited but not yet reaped (state Z or X): holds a pid, runs nothing, needs no kill.
    pub(super) dead: bool,
}

impl ProcInfo {
    /// Whether any of its uids is `uid`: such a process can be signalled by `uid`, and might act
    /// with its rights.
    pub(super) fn has_uid(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }
}

/// Every process visible in `/proc` (our pid namespace).
///
/// Processes that vanish while being read are skipped; only failing to list `/proc` is an error.
pub(super) fn processes() -> io::Result<Vec<ProcInfo>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        found.extend(process(pid));
    }
    Ok(found)
}

/// Process `pid`, if it exists (and its status file reads).
pub(super) fn process(pid: i32) -> Option<ProcInfo> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(pid, &status)
}

/// The pids of live (not zombie) processes with `uid` as real, effective or saved uid.
pub(super) fn live_pids_of_uid(uid: u32) -> io::Result<Vec<i32>> {
    Ok(processes()?
        .into_iter()
        .filter(|p| !p.dead && p.has_uid(uid))
        .map(|p| p.pid)
        .collect())
}

/// The `State:` and `Uid:` lines of a status file.
fn parse_status(pid: i32, status: &str) -> Option<ProcInfo> {
    let mut dead = None;
    let mut uids = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("State:") {
            dead = Some(matches!(rest.trim_start().chars().next(), Some('Z' | 'X')));
        } else if let Some(rest) = line.strip_prefix("Uid:") {
            let mut fields = rest.split_whitespace().map(|f| f.parse::<u32>().ok());
            uids = Some([fields.next()??, fields.next()??, fields.next()??]);
        }
        if dead.is_some() && uids.is_some() {
            break;
        }
    }
    Some(ProcInfo {
        pid,
        uids: uids?,
        dead: dead?,
    })
}

/// When the process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
///
/// Together with the pid it names one process for the life of the machine: a reused pid comes
/// with a later start time.
pub(super) fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a stat line. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name: field 22 is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The value of `name` in the environment the process was started with, `None` if it has none.
///
/// This is the initial environment block in the process's memory: `export` in a shell does not
/// change it, and a zombie's reads as empty. Reading another process's needs the right to ptrace
/// it (same uid and dumpable, or root); a refusal is an error.
pub(super) fn environ_var(pid: i32, name: &str) -> io::Result<Option<Vec<u8>>> {
    let block = fs::read(format!("/proc/{pid}/environ"))?;
    Ok(find_var(&block, name.as_bytes()).map(<[u8]>::to_vec))
}

/// Finds `name=value` in a NUL-separated environment block.
fn find_var<'a>(block: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    block.split(|b| *b == 0).find_map(|entry| {
        entry
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_uids_and_liveness() {
        let status =
            "Name:\tsleep\nState:\tS (sleeping)\nTgid:\t7\nUid:\t61000\t61000\t61001\t61000\n";
        let info = parse_status(7, status).unwrap();
        assert_eq!(info.uids, [61000, 61000, 61001]);
        assert!(!info.dead);
        assert!(info.has_uid(61001) && !info.has_uid(0));
        let zombie = "State:\tZ (zombie)\nUid:\t0\t0\t0\t0\n";
        assert!(parse_status(8, zombie).unwrap().dead);
        assert_eq!(parse_status(9, "State:\tR (running)\n"), None);
    }

    #[test]
    fn start_time_counts_fields_after_the_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 0";
        assert_eq!(parse_start_time(stat), Some(123456));
        assert!(start_time(std::process::id() as i32).is_some());
    }

    #[test]
    fn environment_lookup_matches_whole_names() {
        let block = b"PATH=/bin\0CLAUDE_GATEWAY_RUNX=no\0CLAUDE_GATEWAY_RUN=k/t/r\0";
        assert_eq!(find_var(block, b"CLAUDE_GATEWAY_RUN"), Some(&b"k/t/r"[..]));
        assert_eq!(find_var(block, b"HOME"), None);
    }
}
