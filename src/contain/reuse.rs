//! Recycling a used workspace for a later run, proven entry by entry to be as it was handed over.
//!
//! A checkout costs a clone when it is made and the removal of every file when it goes; on a slow
//! disk both dwarf a run. A run usually changes a handful of files, so the warm pool takes a used
//! checkout back instead, once this module has proven what it keeps:
//!
//! - **The record.** When a checkout is handed over, [`Manifest::record`] notes every entry: its
//!   inode, size, mode, owner, link count, modification and *change* time. The change time
//!   (`ctime`) is set by the kernel on every write, truncation, `chmod`, `chown`, `utimes`, link,
//!   rename or extended-attribute change, and no unprivileged process can set it back; so an entry
//!   whose inode and change time are as recorded has not been touched since.
//! - **The proof.** At the run's end, once every process of it is gone, [`recycle`] builds a fresh
//!   tree beside the used one. A file is moved over only when its record still holds and nobody
//!   holds it open: a write lease is granted only to the inode's sole opener, so a descriptor the
//!   run passed to another run over a unix socket (even one still in flight) is caught, and the
//!   file replaced. Everything else — changed, missing, replaced by a link — is copied from the
//!   pool's pristine template of the same commit. Nothing that is not in the record is ever moved:
//!   untracked and ignored files, new hooks, refs, stashes, links, FIFOs stay in the old tree,
//!   which is removed.
//! - **Every directory is new.** Directories are made afresh and only proven entries moved in, so
//!   a directory descriptor held elsewhere (which would list a later run's file names) points at
//!   the old, removed tree. Entries are private to the run's uid (see [`super::dirs::chown_tree`]),
//!   so a descriptor passed without being open for reading or writing (`O_PATH`) is no way in.
//! - **Not too soon.** A file moved over has a new change time; a later write must get a later one.
//!   The kernel stamps with a clock that moves in ticks, so the recycled checkout is handed out
//!   only once a tick has passed since the newest change time recorded
//!   ([`Manifest::usable_after`]).
//! - **Shared files.** Files the checkout shares with the base (`git clone --local` hardlinks its
//!   objects) stay the gateway's and read-only to the run (see [`super::dirs::chown_tree`]); their
//!   change time moves with every other clone, so for them the inode, owner and mode are checked.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, linkat, symlinkat};

use super::dirs::{dir_flags, ids};
use super::sys;

/// How deep a recorded tree may nest (each level holds a descriptor open while it is rebuilt).
const MAX_DEPTH: usize = 256;

/// The most entries a record holds. A record costs about 150 bytes an entry, held for every
/// checkout in the pool and out with a run; a larger tree is not recycled (removed after its run,
/// as without recycling) rather than hold more than some 30 MiB a checkout.
const MAX_ENTRIES: usize = 200_000;

/// The longest the kernel's timestamp clock lags the real-time clock: one tick, 10 ms at the
/// lowest tick rate Linux offers (100 Hz).
const STAMP_TICK: Duration = Duration::from_millis(10);

/// A workspace's entries as they were handed over to its run (see the [module](self) docs).
#[derive(Debug)]
pub(crate) struct Manifest {
    /// The workspace directory itself.
    root: Seen,
    /// Its entries, sorted by name.
    entries: Vec<Node>,
    /// The newest change time among them.
    newest: (i64, i64),
}

/// One recorded entry.
#[derive(Debug)]
struct Node {
    /// Its name in its directory.
    name: CString,
    /// What it looked like.
    seen: Seen,
    /// What it is.
    kind: Kind,
}

/// What a recorded entry is.
#[derive(Debug)]
enum Kind {
    /// A regular file of the run's.
    File,
    /// A regular file shared with the base (more than one link), the gateway's.
    Shared,
    /// A symbolic link.
    Link,
    /// A directory, with its entries sorted by name.
    Dir(Vec<Node>),
}

/// The parts of an entry's status that say whether it was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Seen {
    fn of(stat: &FileStat) -> Self {
        Self {
            ino: stat.st_ino,
            mode: stat.st_mode,
            uid: stat.st_uid,
            gid: stat.st_gid,
            nlink: stat.st_nlink,
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
        }
    }

    fn file_type(&self) -> SFlag {
        SFlag::from_bits_truncate(self.mode) & SFlag::S_IFMT
    }
}

/// Why a used workspace could not be recycled; the caller removes it instead.
#[derive(Debug)]
pub(crate) struct RecycleError {
    /// What was being done.
    step: &'static str,
    /// The system's answer.
    source: io::Error,
}

impl fmt::Display for RecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

impl std::error::Error for RecycleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Adds the step to an I/O result's error.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, RecycleError>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, step: &'static str) -> Result<T, RecycleError> {
        self.map_err(|e| RecycleError {
            step,
            source: e.into(),
        })
    }
}

impl Manifest {
    /// Records the tree at `root` as it is now (blocking: a status call per entry). Call it once
    /// the tree is handed over and before any process of the run exists.
    pub(crate) fn record(root: &Path) -> Result<Self, RecycleError> {
        let dir = open(root, dir_flags(), Mode::empty()).step("opening the workspace")?;
        let root = Seen::of(&fstat(&dir).step("reading the workspace")?);
        let mut newest = root.ctime;
        let mut budget = MAX_ENTRIES;
        let entries = record_dir(dir, 0, &mut newest, &mut budget)?;
        Ok(Self {
            root,
            entries,
            newest,
        })
    }

    /// When the recorded tree may be handed to a run: a kernel tick after its newest change time,
    /// so any write of the run gets a change time the record does not hold.
    pub(crate) fn usable_after(&self) -> SystemTime {
        let (secs, nanos) = self.newest;
        let stamp = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
            + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
        stamp + STAMP_TICK
    }

    /// How many entries are recorded (the workspace itself not counted).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        fn count(nodes: &[Node]) -> usize {
            nodes
                .iter()
                .map(|node| match &node.kind {
                    Kind::Dir(children) => 1 + count(children),
                    _ => 1,
                })
                .sum()
        }
        count(&self.entries)
    }
}

/// Refuses a tree nested deeper than [`MAX_DEPTH`].
fn within_depth(depth: usize, step: &'static str) -> Result<(), RecycleError> {
    if depth > MAX_DEPTH {
        return Err(RecycleError {
            step,
            source: io::Error::other(format!("nested more than {MAX_DEPTH} directories deep")),
        });
    }
    Ok(())
}

/// Records the entries of `dir`, sorted by name.
fn record_dir(
    dir: OwnedFd,
    depth: usize,
    newest: &mut (i64, i64),
    budget: &mut usize,
) -> Result<Vec<Node>, RecycleError> {
    within_depth(depth, "recording the workspace")?;
    let mut dir = Dir::from_fd(dir).step("listing a directory")?;
    let mut names: Vec<CString> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.step("listing a directory")?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    *budget = budget
        .checked_sub(names.len())
        .ok_or_else(|| RecycleError {
            step: "recording the workspace",
            source: io::Error::other(format!("more than {MAX_ENTRIES} entries")),
        })?;
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        let stat = fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .step("reading an entry")?;
        let seen = Seen::of(&stat);
        *newest = (*newest).max(seen.ctime);
        let kind = match seen.file_type() {
            SFlag::S_IFDIR => {
                let sub = openat(&dir, name.as_c_str(), dir_flags(), Mode::empty())
                    .step("opening a directory")?;
                Kind::Dir(record_dir(sub, depth + 1, newest, budget)?)
            }
            SFlag::S_IFREG if seen.nlink > 1 => Kind::Shared,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Link,
            _ => {
                // A fresh checkout holds nothing else; refusing keeps the proof simple.
                return Err(RecycleError {
                    step: "recording the workspace",
                    source: io::Error::other("an entry is neither file, link nor directory"),
                });
            }
        };
        nodes.push(Node { name, seen, kind });
    }
    Ok(nodes)
}

/// Builds, at `into` (which must not exist), the tree `manifest` records, from the used workspace
/// `used` and the pristine `template` checkout of the same commit, owned by `owner`; answers the
/// record of the new tree. `used` keeps whatever was not proven and is the caller's to remove.
/// Blocking. Call it only once no process of the run that used `used` is alive.
pub(crate) fn recycle(
    used: &Path,
    into: &Path,
    manifest: &Manifest,
    template: &Path,
    owner: u32,
) -> Result<Manifest, RecycleError> {
    let old = open(used, dir_flags(), Mode::empty()).step("opening the used workspace")?;
    let pristine = open(template, dir_flags(), Mode::empty()).step("opening the template")?;
    std::fs::create_dir(into).step("creating the recycled workspace")?;
    let new = open(into, dir_flags(), Mode::empty()).step("opening the recycled workspace")?;
    let (user, group) = ids(owner);
    fchown(&new, user, group).step("handing over the recycled workspace")?;
    let rebuilt = Rebuild { owner };
    let mut newest = (0, 0);
    let entries = rebuilt.dir(
        Some(&old),
        &new,
        &pristine,
        &manifest.entries,
        0,
        &mut newest,
    )?;
    fchmod(&new, Mode::from_bits_truncate(manifest.root.mode & 0o7777))
        .step("handing over the recycled workspace")?;
    let root = Seen::of(&fstat(&new).step("reading the recycled workspace")?);
    Ok(Manifest {
        root,
        entries,
        newest: newest.max(root.ctime),
    })
}

/// One rebuild's settings.
struct Rebuild {
    /// The run uid that owns the tree.
    owner: u32,
}

impl Rebuild {
    /// Fills the new directory `new` with the recorded `nodes`: proven ones moved from `old` (when
    /// the used tree still has this directory), the others copied from `pristine`.
    fn dir(
        &self,
        old: Option<&OwnedFd>,
        new: &OwnedFd,
        pristine: &OwnedFd,
        nodes: &[Node],
        depth: usize,
        newest: &mut (i64, i64),
    ) -> Result<Vec<Node>, RecycleError> {
        within_depth(depth, "rebuilding the workspace")?;
        let mut rebuilt = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = node.name.as_c_str();
            let kind = match &node.kind {
                Kind::Dir(children) => {
                    mkdirat(new, name, Mode::from_bits_truncate(0o700))
                        .step("creating a directory")?;
                    let sub_new = openat(new, name, dir_flags(), Mode::empty())
                        .step("opening a directory")?;
                    let (user, group) = ids(self.owner);
                    fchown(&sub_new, user, group).step("handing over a directory")?;
                    // Not a directory any more (a link, a file): everything below is copied.
                    let sub_old =
                        old.and_then(|old| openat(old, name, dir_flags(), Mode::empty()).ok());
                    let sub_pristine = openat(pristine, name, dir_flags(), Mode::empty())
                        .step("opening a template directory")?;
                    let children = self.dir(
                        sub_old.as_ref(),
                        &sub_new,
                        &sub_pristine,
                        children,
                        depth + 1,
                        newest,
                    )?;
                    fchmod(&sub_new, Mode::from_bits_truncate(node.seen.mode & 0o7777))
                        .step("handing over a directory")?;
                    Kind::Dir(children)
                }
                Kind::File => Kind::File,
                Kind::Shared => Kind::Shared,
                Kind::Link => Kind::Link,
            };
            if !matches!(kind, Kind::Dir(_)) {
                match old {
                    Some(old) if self.unchanged(old, node)? => {
                        renameat(old, name, new, name).step("moving a proven entry")?
                    }
                    _ => self.copy(pristine, new, node)?,
                }
            }
            let seen = Seen::of(
                &fstatat(new, name, AtFlags::AT_SYMLINK_NOFOLLOW).step("reading a new entry")?,
            );
            *newest = (*newest).max(seen.ctime);
            rebuilt.push(Node {
                name: node.name.clone(),
                seen,
                kind,
            });
        }
        Ok(rebuilt)
    }

    /// Whether the non-directory `node` is in `old` as recorded, and (a file of the run's) open
    /// nowhere.
    fn unchanged(&self, old: &OwnedFd, node: &Node) -> Result<bool, RecycleError> {
        let name = node.name.as_c_str();
        let now = match fstatat(old, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Seen::of(&stat),
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e).step("reading a used entry"),
        };
        Ok(match node.kind {
            Kind::Link => now == node.seen,
            // Its change time moves with every clone that links it; the run cannot write it,
            // change its mode or owner, so the same inode is the same content.
            Kind::Shared => {
                now.ino == node.seen.ino
                    && now.mode == node.seen.mode
                    && now.uid == node.seen.uid
                    && now.gid == node.seen.gid
                    && now.size == node.seen.size
                    && now.uid != self.owner
            }
            Kind::File => now == node.seen && !open_elsewhere(old, name, now.ino)?,
            Kind::Dir(_) => false,
        })
    }

    /// Copies the non-directory `node` from `pristine` into `new`, with its recorded mode, owned by
    /// the run; a shared file is linked again.
    fn copy(&self, pristine: &OwnedFd, new: &OwnedFd, node: &Node) -> Result<(), RecycleError> {
        let name = node.name.as_c_str();
        let (user, group) = ids(self.owner);
        match node.kind {
            Kind::Shared => linkat(pristine, name, new, name, AtFlags::empty())
                .step("linking a shared file from the template"),
            Kind::Link => {
                let target = readlinkat(pristine, name).step("reading a template link")?;
                symlinkat(target.as_os_str(), new, name).step("copying a link")?;
                fchownat(new, name, user, group, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .step("handing over a link")
            }
            Kind::File => {
                let source = openat(
                    pristine,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .step("opening a template file")?;
                let target = openat(
                    new,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .step("creating a file")?;
                let (mut source, mut target) = (File::from(source), File::from(target));
                io::copy(&mut source, &mut target).step("copying a template file")?;
                fchown(&target, user, group).step("handing over a file")?;
                fchmod(&target, Mode::from_bits_truncate(node.seen.mode & 0o7777))
                    .step("handing over a file")
            }
            Kind::Dir(_) => Ok(()),
        }
    }
}

/// Whether the file `name` in `dir` (inode `ino`) is open anywhere but here, or is no longer that
/// inode.
fn open_elsewhere(dir: &OwnedFd, name: &CStr, ino: u64) -> Result<bool, RecycleError> {
    let file = openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .step("opening a used file")?;
    if fstat(&file).step("reading a used file")?.st_ino != ino {
        return Ok(true);
    }
    sys::opened_elsewhere(&file).step("asking whether a used file is open elsewhere")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// A uid of its own for these tests, far from every other test's range.
    const UID: u32 = 3_990_000;

    /// Every entry under `root`, one line each, sorted: path, type, mode, owner, content (or link
    /// target) and extended attributes; `nlink` of the run's own files. What a run would see.
    fn listing(root: &Path) -> Vec<String> {
        let script = r#"
import os, sys, hashlib
root = sys.argv[1]
for dirpath, dirs, files in os.walk(root):
    for name in sorted(dirs + files):
        p = os.path.join(dirpath, name); st = os.lstat(p); rel = os.path.relpath(p, root)
        kind = 'l' if os.path.islink(p) else 'd' if os.path.isdir(p) else 'f' if os.path.isfile(p) else 'other'
        what = os.readlink(p) if kind == 'l' else hashlib.sha256(open(p, 'rb').read()).hexdigest()[:12] if kind == 'f' else ''
        links = st.st_nlink if kind == 'f' and st.st_uid != 0 else '-'
        xattrs = sorted(os.listxattr(p, follow_symlinks=False)) if kind != 'l' else []
        print(rel, kind, oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, what, links, xattrs)
"#;
        let out = succeeded(Command::new("python3").args(["-c", script]).arg(root));
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Makes the tree every test starts from at `dir`: what a checkout holds (files, an
    /// executable, a link, nested directories) and `shared`, a file linked from outside as `git
    /// clone --local` links the base's objects.
    fn fill(dir: &Path, shared: &Path) {
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join(".git/hooks")).unwrap();
        std::fs::write(dir.join("top"), "top file\n").unwrap();
        std::fs::write(dir.join("a/file2"), "second\n").unwrap();
        std::fs::write(dir.join("a/b/file1"), "first\n").unwrap();
        std::fs::write(dir.join("a/b/untouched"), "never changed\n").unwrap();
        std::fs::write(dir.join(".git/config"), "[core]\n").unwrap();
        std::fs::write(dir.join(".git/hooks/pre-commit.sample"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("top", dir.join("link")).unwrap();
        std::fs::hard_link(shared, dir.join(".git/pack")).unwrap();
    }

    struct Fixture {
        _root: tempfile::TempDir,
        template: PathBuf,
        used: PathBuf,
        shared: PathBuf,
    }

    /// A template and a used workspace of the same tree, the workspace handed over to [`UID`].
    fn fixture() -> (Fixture, Manifest) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "recycling is tested as root (CI runs as root)"
        );
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("base-object");
        std::fs::write(&shared, "the base's object\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o444)).unwrap();
        let template = root.path().join("template");
        let used = root.path().join("used");
        fill(&template, &shared);
        fill(&used, &shared);
        super::super::dirs::chown_tree(&used, UID).unwrap();
        let manifest = Manifest::record(&used).unwrap();
        (
            Fixture {
                template,
                used,
                shared,
                _root: root,
            },
            manifest,
        )
    }

    /// Runs `script` with `sh` in `dir` as [`UID`], as the run would.
    fn as_run(dir: &Path, script: &str) {
        let (uid, gid) = (format!("--reuid={UID}"), format!("--regid={UID}"));
        let args = [&*uid, &*gid, "--clear-groups", "sh", "-ec", script];
        succeeded(Command::new("setpriv").args(args).current_dir(dir));
    }

    /// Runs `command`, failing the test with its stderr unless it succeeds.
    fn succeeded(command: &mut Command) -> std::process::Output {
        let out = command.output().expect("the command runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command:?}: {stderr}");
        out
    }

    #[test]
    fn a_recycled_tree_is_the_handed_over_tree_whatever_the_run_did() {
        let (fx, manifest) = fixture();
        let before = listing(&fx.used);
        assert_eq!(manifest.len(), 13, "{before:#?}");
        let untouched_ino = std::fs::metadata(fx.used.join("a/b/untouched"))
            .unwrap()
            .ino();

        // Everything a run can do to its tree, as the run's uid: same-size rewrite with the old
        // modification time put back, a mode changed and changed back, an extended attribute, a
        // removed file, a file where a directory was, new files, a hook, a link retargeted, a
        // hard link, a FIFO, a directory opened to everyone.
        as_run(
            &fx.used,
            "printf 'FIRST\\n' > a/b/file1.new && touch -r a/b/file1 a/b/file1.new && cat a/b/file1.new > a/b/file1 \
             && touch -r a/b/file1.new a/b/file1 && rm a/b/file1.new \
             && chmod 0644 a/file2 && chmod 0600 a/file2 \
             && python3 -c 'import os; os.setxattr(\"top\", \"user.planted\", b\"1\")' \
             && rm run.sh && mkdir run.sh \
             && echo untracked > a/new && mkdir -p ignored/deep && echo x > ignored/deep/file \
             && printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit \
             && echo '[core]\\n\\thooksPath = /tmp' > .git/config \
             && ln -sfn /etc/passwd link && ln a/b/file1 hardlink && mkfifo a/fifo && chmod 0777 a",
        );
        // Descriptors another run could hold, passed over a socket: a file the run did not
        // otherwise touch, and a directory.
        let mut held = std::fs::OpenOptions::new()
            .append(true)
            .open(fx.used.join(".git/hooks/pre-commit.sample"))
            .unwrap();
        let held_dir = std::fs::File::open(fx.used.join("a/b")).unwrap();

        let into = fx.used.with_file_name("recycled");
        let rebuilt = recycle(&fx.used, &into, &manifest, &fx.template, UID).unwrap();
        assert_eq!(
            listing(&into),
            before,
            "the recycled tree differs from the handed-over one"
        );
        assert_eq!(
            std::fs::metadata(into.join("a/b/untouched")).unwrap().ino(),
            untouched_ino,
            "an untouched file is moved over, not copied"
        );
        assert_eq!(
            std::fs::metadata(into.join(".git/pack")).unwrap().ino(),
            std::fs::metadata(&fx.shared).unwrap().ino(),
            "a file shared with the base stays shared"
        );

        // What the holders do next reaches nothing of the recycled tree.
        use std::io::Write as _;
        held.write_all(b"written through a kept descriptor\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(into.join(".git/hooks/pre-commit.sample")).unwrap(),
            "#!/bin/sh\n"
        );
        let mut dir = Dir::from_fd(held_dir.into()).unwrap();
        std::fs::write(into.join("a/b/later-run"), "a later run's file").unwrap();
        let seen: Vec<String> = dir
            .iter()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !seen.iter().any(|n| n == "later-run"),
            "a kept directory descriptor lists the recycled tree: {seen:?}"
        );
        std::fs::remove_file(into.join("a/b/later-run")).unwrap();

        // The new record holds for another round.
        std::fs::remove_dir_all(&fx.used).unwrap();
        as_run(&into, "echo changed > top && rm -r a");
        let again = fx.used.with_file_name("again");
        recycle(&into, &again, &rebuilt, &fx.template, UID).unwrap();
        assert_eq!(listing(&again), before);
    }

    #[test]
    fn a_tree_is_usable_a_tick_after_its_newest_change() {
        let (_fx, manifest) = fixture();
        let after = manifest.usable_after();
        let now = SystemTime::now();
        assert!(
            after > now - Duration::from_secs(5) && after <= now + STAMP_TICK,
            "{after:?}"
        );
    }
}
