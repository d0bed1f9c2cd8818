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

/// The kinds of System V IPC object, as `/proc/sysvipc` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ipc {
    /// Shared memory segments (`/proc/sysvipc/shm`).
    SharedMemory,
    /// Message queues (`/proc/sysvipc/msg`).
    MessageQueue,
    /// Semaphore sets (`/proc/sysvipc/sem`).
    Semaphores,
}

impl Ipc {
    /// Every kind.
    pub(super) const ALL: [Ipc; 3] = [Ipc::SharedMemory, Ipc::MessageQueue, Ipc::Semaphores];

    /// Its listing and the name of its id column there.
    fn listing(self) -> (&'static str, &'static str) {
        match self {
            Ipc::SharedMemory => ("/proc/sysvipc/shm", "shmid"),
            Ipc::MessageQueue => ("/proc/sysvipc/msg", "msqid"),
            Ipc::Semaphores => ("/proc/sysvipc/sem", "semid"),
        }
    }
}

/// The ids of the `kind` objects owned or created by `uid` (our IPC namespace); none when the
/// listing cannot be read (a kernel without System V IPC).
pub(super) fn ipc_of_uid(kind: Ipc, uid: u32) -> Vec<i32> {
    let (path, id_column) = kind.listing();
    fs::read_to_string(path)
        .map(|listing| parse_ipc(&listing, id_column, uid))
        .unwrap_or_default()
}

/// The ids in a `/proc/sysvipc` listing whose `uid` or `cuid` column is `uid`.
fn parse_ipc(listing: &str, id_column: &str, uid: u32) -> Vec<i32> {
    let mut lines = listing.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let column = |name: &str| header.split_whitespace().position(|c| c == name);
    let (Some(id), Some(owner), Some(creator)) = (column(id_column), column("uid"), column("cuid"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok()) == Some(uid);
            (is(owner) || is(creator))
                .then(|| fields.get(id)?.parse().ok())
                .flatten()
        })
        .collect()
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
    fn sysvipc_listings_give_the_ids_a_uid_owns_or_created() {
        let listing = "       key      shmid perms       size  cpid  lpid nattch   uid   gid  cuid  cgid\n\
                       729204          4   600         56  2226 30473      5   101   104   101   104\n\
                            0          7   600       1024  3000  3000      0  3990  3990  3990  3990\n\
                            0          9   666       1024  3000  3000      0     0     0  3990  3990\n";
        assert_eq!(parse_ipc(listing, "shmid", 3990), vec![7, 9]);
        assert_eq!(parse_ipc(listing, "shmid", 101), vec![4]);
        assert!(
            parse_ipc(listing, "msqid", 3990).is_empty(),
            "no such column"
        );
        assert!(parse_ipc("", "shmid", 3990).is_empty());
    }

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
