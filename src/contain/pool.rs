//! The uid pool's shared state: one lock file per uid in a root-owned directory.
//!
//! Several gateway processes on one host may share a uid range, and any of them may crash. An
//! exclusive `flock` on `<lock dir>/uid-<N>.lock` says "uid N belongs to a live run of a live
//! gateway": the kernel drops it when the holder's descriptor closes, which includes the holder
//! being killed with SIGKILL. So a free lock means whatever runs under that uid is an orphan, safe
//! to kill. Lock files are never deleted: unlinking a file another process is about to lock would
//! let two holders lock two different files of the same name. There are at most as many as uids.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, Uid, User};

use super::mode::Unavailable;

/// The lock directory, checked once at start-up.
#[derive(Debug)]
pub(super) struct LockDir {
    /// Its path.
    path: PathBuf,
}

impl LockDir {
    /// Creates the directory (mode 0700) if missing, then refuses it unless it is a real directory
    /// owned by this process's euid and writable by nobody else: whoever can write there can hold
    /// or fake a uid's lock, and so make this gateway reuse a uid that is busy, or never use it.
    pub(super) fn open(path: &Path) -> Result<Self, Unavailable> {
        let refuse = |reason: String| Unavailable::LockDir {
            path: path.to_path_buf(),
            reason,
        };
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(refuse(format!("cannot create it: {e}"))),
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
        if !meta.file_type().is_dir() {
            return Err(refuse(
                "is not a directory (a symlink is refused too)".into(),
            ));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(refuse(format!(
                "is owned by uid {}, not by this process (euid {euid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "is writable by group or others (mode {:04o}); chmod 0700 it",
                meta.mode() & 0o7777
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Takes uid `uid`'s lock if nobody holds it; `None` if another run (of this or another
    /// gateway process) does.
    ///
    /// `flock` locks belong to the open file description, so two leases inside one process exclude
    /// each other just as two processes do. The descriptor is close-on-exec: children never
    /// inherit it, so a crashed gateway's orphans cannot keep its uids locked.
    pub(super) fn try_lock(&self, uid: u32) -> io::Result<Option<UidLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path.join(format!("uid-{uid}.lock")))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(UidLock { uid, _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }
}

/// A uid held for one run; the lock is released when this is dropped.
#[derive(Debug)]
pub(super) struct UidLock {
    /// The uid (and gid).
    uid: u32,
    /// The locked lock file; dropping it unlocks and closes.
    _lock: Flock<File>,
}

/// What the first byte of a lock file says about the uid when nobody holds it.
///
/// A holder writes [`HELD`] when it takes the uid and [`CLEAN`] only once it has seen that nothing
/// of its run is left. A crashed holder never gets to write [`CLEAN`], so the next lease of the
/// uid sees [`HELD`] (or a new, empty file) and looks for leftovers in `/proc`; after a clean end
/// that look, a read of every process's status on the run's path, is skipped.
const CLEAN: u8 = b'c';
/// See [`CLEAN`].
const HELD: u8 = b'h';

impl UidLock {
    /// The uid this lock holds.
    pub(super) fn uid(&self) -> u32 {
        self.uid
    }

    /// Whether the previous holder ended cleanly (nothing of its run left), as it recorded; a
    /// new file, a crashed holder or an unreadable file all answer no.
    pub(super) fn left_clean(&self) -> bool {
        let mut state = [0u8; 1];
        matches!(self._lock.read_at(&mut state, 0), Ok(1)) && state[0] == CLEAN
    }

    /// Records that the uid is in use: from now on only [`mark_clean`](Self::mark_clean) says
    /// nothing of it is left.
    pub(super) fn mark_held(&self) -> io::Result<()> {
        self._lock.write_all_at(&[HELD], 0)
    }

    /// Records that nothing of the run is left under the uid.
    pub(super) fn mark_clean(&self) {
        if let Err(error) = self._lock.write_all_at(&[CLEAN], 0) {
            // Harmless: the next lease looks in /proc instead of trusting the file.
            tracing::debug!(uid = self.uid, %error, "could not record a clean end in the uid's lock");
        }
    }
}

/// Why `uid` must not be used for runs, if it must not: it (or its gid) belongs to an account or
/// group of this host. Killing "every process of uid N" must never hit a stranger, and a run with
/// gid N would get that group's files. An unanswerable lookup counts as taken.
pub(super) fn taken_by_account(uid: u32) -> Option<String> {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => return Some(format!("uid {uid} is the account {:?}", user.name)),
        Ok(None) => {}
        Err(e) => return Some(format!("cannot look up uid {uid}: {e}")),
    }
    match Group::from_gid(Gid::from_raw(uid)) {
        Ok(Some(group)) => Some(format!("gid {uid} is the group {:?}", group.name)),
        Ok(None) => None,
        Err(e) => Some(format!("cannot look up gid {uid}: {e}")),
    }
}
