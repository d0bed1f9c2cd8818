//! The directories of a run: a private HOME, a workspace handed to the run's uid, the operator's
//! CLI credentials, and removing it all afterwards.
//!
//! The gateway runs as root in uid mode and these paths lead into trees a run writes to, so every
//! walk here goes through directory descriptors opened with `O_NOFOLLOW`: a symlink planted by a
//! run (`workspace/x -> /etc`) is changed as a link, never followed.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, fstatat, mkdirat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchown, fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

/// How deep a handed-over or opened-up tree may nest. Each level holds one descriptor open; a git
/// checkout is a few dozen deep, so a deeper tree is refused rather than risking the fd limit.
const MAX_DEPTH: usize = 256;

/// Flags for opening a directory to work inside it, never through a symlink.
pub(super) fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The owner pair for a run's uid (gid = uid).
pub(super) fn ids(uid: u32) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(uid)), Some(Gid::from_raw(uid)))
}

/// Creates `path` as a fresh directory, mode 0700, owned by `owner` (uid and gid) when given.
///
/// Fails if it already exists: a HOME left by an earlier run would carry its files into this one.
pub(super) fn make_private_dir(path: &Path, owner: Option<u32>) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(path)?;
    let dir = open(path, dir_flags(), Mode::empty())?;
    // The umask may have narrowed the mode; it can never have widened it.
    fchmod(&dir, Mode::from_bits_truncate(0o700))?;
    if let Some(uid) = owner {
        let (user, group) = ids(uid);
        fchown(&dir, user, group)?;
    }
    Ok(())
}

/// Gives `root` and everything under it to `uid` (uid and gid), without following symlinks, and
/// makes it private to that uid: `root` and every directory 0700, every file its owner bits only
/// (git checks files out 0644, 0755 for executables: they become 0600 and 0700).
///
/// Private all the way down, not just at `root`: a descriptor of a directory or file inside that a
/// run passes to another run (over a unix socket) is then no way in for the other run's uid, which
/// is what lets a used checkout be proven clean and recycled (see [`super::reuse`]).
///
/// Meant for a tree the gateway just made (a clone): a run that already runs could keep adding
/// entries while the walk goes on.
pub(super) fn chown_tree(root: &Path, uid: u32) -> io::Result<()> {
    let dir = open(root, dir_flags(), Mode::empty())?;
    let (user, group) = ids(uid);
    fchown(&dir, user, group)?;
    fchmod(&dir, Mode::from_bits_truncate(0o700))?;
    walk(dir, 0, &mut |step| match step {
        Step::Entry(parent, name) => {
            // A file with more than one link shares its inode with another tree: `git clone
            // --local` hardlinks the base's objects. Giving it away would let the run write the
            // base's copy, and so into every later run; it stays the gateway's (read-only to the
            // run), and the run can still unlink its own name for it.
            let stat = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            let regular = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
            if regular && stat.st_nlink > 1 {
                return Ok(());
            }
            fchownat(parent, name, user, group, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            // A link has no mode of its own; anything else keeps only its owner's bits. No run
            // process exists yet, so the entry cannot have been swapped for a link since the stat.
            let link = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK;
            if !link {
                fchmodat(
                    parent,
                    name,
                    Mode::from_bits_truncate(stat.st_mode & 0o700),
                    FchmodatFlags::FollowSymlink,
                )?;
            }
            Ok(())
        }
        Step::EnterDir(_, _) => Ok(()),
        Step::InDir(sub) => {
            fchown(sub, user, group)?;
            fchmod(sub, Mode::from_bits_truncate(0o700)).map_err(Into::into)
        }
    })
}

/// What [`walk`] shows its visitor.
enum Step<'a> {
    /// A non-directory entry (file, symlink, socket…) of `parent`, named `name`.
    Entry(&'a Dir, &'a CStr),
    /// The subdirectory `name` of `parent`, about to be opened (without following a link).
    EnterDir(&'a Dir, &'a CStr),
    /// That subdirectory, opened, before its contents are visited.
    InDir(&'a OwnedFd),
}

/// Visits every entry under the directory `dir`, depth first, through directory descriptors.
fn walk(
    dir: OwnedFd,
    depth: usize,
    visit: &mut dyn FnMut(Step<'_>) -> io::Result<()>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "the tree is nested more than {MAX_DEPTH} directories deep"
        )));
    }
    let mut dir = Dir::from_fd(dir)?;
    let mut entries: Vec<(CString, Option<Type>)> = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        entries.push((name.to_owned(), entry.file_type()));
    }
    for (name, kind) in entries {
        let is_dir = match kind {
            Some(kind) => kind == Type::Directory,
            // Some filesystems do not report the type in the listing.
            None => {
                let stat = fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
            }
        };
        if is_dir {
            visit(Step::EnterDir(&dir, name.as_c_str()))?;
            let sub = openat(&dir, name.as_c_str(), dir_flags(), Mode::empty())?;
            visit(Step::InDir(&sub))?;
            walk(sub, depth + 1, visit)?;
        } else {
            visit(Step::Entry(&dir, name.as_c_str()))?;
        }
    }
    Ok(())
}

/// Copies the operator's CLI credentials `source` (if it exists) into `home/.claude/
/// .credentials.json`, mode 0600, owned by `owner` when given; `.claude` is made 0700. Returns
/// whether there was a file to copy.
///
/// The file is written under a temporary name and renamed into place, so a link a run planted at
/// the final name is replaced, not written through. The run gets a copy: a token it refreshes
/// stays in its HOME and never touches the operator's file.
pub(super) fn install_credentials(
    source: &Path,
    home: &Path,
    owner: Option<u32>,
) -> io::Result<bool> {
    let contents = match std::fs::read(source) {
        Ok(contents) => contents,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let home = open(home, dir_flags(), Mode::empty())?;
    match mkdirat(&home, ".claude", Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let claude = openat(&home, ".claude", dir_flags(), Mode::empty())?;
    fchmod(&claude, Mode::from_bits_truncate(0o700))?;
    if let Some(uid) = owner {
        let (user, group) = ids(uid);
        fchown(&claude, user, group)?;
    }
    let temporary = format!(".credentials.json.{}.tmp", uuid::Uuid::new_v4().simple());
    let fd = openat(
        &claude,
        temporary.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let written = (|| -> io::Result<()> {
        let mut file = File::from(fd);
        file.write_all(&contents)?;
        fchmod(&file, Mode::from_bits_truncate(0o600))?;
        if let Some(uid) = owner {
            let (user, group) = ids(uid);
            fchown(&file, user, group)?;
        }
        renameat(&claude, temporary.as_str(), &claude, ".credentials.json")?;
        Ok(())
    })();
    if written.is_err() {
        let _ = unlinkat(&claude, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written.map(|()| true)
}

/// The host's directories every uid may write to (sticky, world-writable; `/dev/mqueue` holds POSIX
/// message queues where it is mounted). What a run leaves there outlives its HOME and its
/// workspace, and its uid goes to later runs.
const SHARED_WRITABLE: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"];

/// Removes everything `uid` owns directly in the host's shared writable directories, and directly
/// in the root-owned sticky directories inside them (`/tmp/.X11-unix` and the like), so nothing a
/// run left there reaches the next run of its uid. Returns how many entries went. Blocking; call it
/// once nothing of the uid runs, so nothing is added meanwhile.
///
/// Only entries the uid owns are touched: in a sticky directory nobody else's can have been moved
/// or renamed by the run. A directory goes whole, through [`remove_tree`], which never follows a
/// link.
pub(super) fn sweep_shared(uid: u32) -> usize {
    let mut removed = 0;
    for dir in SHARED_WRITABLE {
        removed += sweep_owned(Path::new(dir), uid, 1);
    }
    removed
}

/// [`sweep_shared`] for one directory, `depth` more levels of root-owned sticky ones below it.
fn sweep_owned(dir: &Path, uid: u32, depth: usize) -> usize {
    let Ok(fd) = open(dir, dir_flags(), Mode::empty()) else {
        return 0;
    };
    let Ok(mut listing) = Dir::from_fd(fd) else {
        return 0;
    };
    let names: Vec<CString> = listing
        .iter()
        .flatten()
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.to_bytes() != b"." && name.to_bytes() != b"..")
        .collect();
    let mut found: Vec<(CString, bool)> = Vec::new();
    let mut shared_below: Vec<CString> = Vec::new();
    for name in names {
        let Ok(stat) = fstatat(&listing, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if stat.st_uid == uid {
            found.push((name, is_dir));
        } else if is_dir && stat.st_uid == 0 && stat.st_mode & 0o1002 == 0o1002 {
            shared_below.push(name);
        }
    }
    let mut removed = 0;
    for (name, is_dir) in found {
        let gone = if is_dir {
            let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            remove_tree(&path).is_ok()
        } else {
            unlinkat(&listing, name.as_c_str(), UnlinkatFlags::NoRemoveDir).is_ok()
        };
        removed += usize::from(gone);
    }
    if depth > 0 {
        for name in shared_below {
            let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            removed += sweep_owned(&path, uid, depth - 1);
        }
    }
    removed
}

/// How often [`remove_tree`] tries.
const REMOVE_ATTEMPTS: u32 = 5;

/// The pause before the n-th retry is n times this: 20, 40, 60, 80 ms.
const REMOVE_PAUSE: Duration = Duration::from_millis(20);

/// Removes `path` and everything under it; a missing `path` is fine. Blocking (see
/// [`remove_tree_async`]).
///
/// Call it once the run's processes are gone; even then a process killed a moment ago may still be
/// closing files, and a filesystem may lag, so "directory not empty" and "busy" are retried. A run
/// may also have taken the write bit off its own directories (`chmod 500`), which stops an
/// unprivileged gateway: on "permission denied" the tree's directories are opened up (u+rwx, never
/// through a symlink) and the removal retried. `remove_dir_all` itself never follows symlinks.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        let error = match std::fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let gone = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if gone {
            return Ok(());
        }
        if attempt >= REMOVE_ATTEMPTS {
            return Err(error);
        }
        match error.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => {
                // Best effort: whatever stays closed shows up in the next attempt's error.
                let _ = open_up(path);
            }
            Some(libc::ENOTEMPTY | libc::EBUSY | libc::ENOENT) => {
                std::thread::sleep(REMOVE_PAUSE * attempt);
            }
            _ => return Err(error),
        }
        attempt += 1;
    }
}

/// [`remove_tree`] on the blocking pool.
pub(crate) async fn remove_tree_async(path: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || remove_tree(&path))
        .await
        .map_err(io::Error::other)?
}

/// Adds u+rwx to `root` and every directory under it, so their entries can be listed and removed.
///
/// A subdirectory is opened up before it is opened (a `chmod 000` one could not be), by name
/// relative to its parent's descriptor and without following a link.
fn open_up(root: &Path) -> io::Result<()> {
    let dir = open(root, dir_flags(), Mode::empty())?;
    let mode = fstat(&dir)?.st_mode;
    fchmod(&dir, Mode::from_bits_truncate(mode | 0o700))?;
    walk(dir, 0, &mut |step| match step {
        Step::EnterDir(parent, name) => {
            let mode = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?.st_mode;
            fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(mode | 0o700),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(Into::into)
        }
        Step::Entry(..) | Step::InDir(_) => Ok(()),
    })
}
