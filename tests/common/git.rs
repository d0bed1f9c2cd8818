//! The one git fixture: a bare "remote", a working copy that pushes to it, and a warm base cloned
//! from it, as an operator's `WORKSPACE_DIR` would be.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// What the first commit of [`Repos::new`] and [`Repos::on_branch`] holds.
pub const README: (&str, &str) = ("README.md", "hello\n");

/// Runs git in `dir` with a fixed identity, isolated from the machine's git configuration; panics
/// with its stderr on failure, answers its stdout trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote, a working copy (`seed`) that pushes to it, and a base cloned from it, all in one
/// temporary directory.
pub struct Repos {
    /// Holds everything; removed on drop.
    pub root: TempDir,
    /// The bare remote.
    pub remote: PathBuf,
    /// A working copy of the remote: what [`Repos::push`] commits in.
    pub seed: PathBuf,
    /// The warm base clone.
    pub base: PathBuf,
}

impl Repos {
    /// A remote whose default branch is `main`, holding [`README`], and its base.
    pub fn new() -> Self {
        Self::on_branch("main")
    }

    /// A remote whose default branch is `branch`, holding [`README`], and its base.
    pub fn on_branch(branch: &str) -> Self {
        Self::seeded(branch, [README])
    }

    /// A remote whose default branch is `branch`, with one commit holding `files` (path, content),
    /// and a base cloned from it.
    pub fn seeded<P: AsRef<Path>, C: AsRef<[u8]>>(
        branch: &str,
        files: impl IntoIterator<Item = (P, C)>,
    ) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let (remote, seed, base) = (r.join("remote.git"), r.join("seed"), r.join("base"));
        git(
            r,
            &["init", "--quiet", "--bare", "-b", branch, "remote.git"],
        );
        git(r, &["clone", "--quiet", "remote.git", "seed"]);
        for (file, content) in files {
            write(&seed.join(file), content);
        }
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "--quiet", "-m", "first"]);
        git(&seed, &["push", "--quiet", "origin", "HEAD"]);
        git(r, &["clone", "--quiet", "remote.git", "base"]);
        Self {
            root,
            remote,
            seed,
            base,
        }
    }

    /// Commits `file` on the seed's current branch, pushes it, and answers the commit id.
    pub fn push(&self, file: &str, content: &str) -> String {
        write(&self.seed.join(file), content);
        git(&self.seed, &["add", "--", file]);
        git(&self.seed, &["commit", "--quiet", "-m", file]);
        git(&self.seed, &["push", "--quiet", "origin", "HEAD"]);
        git(&self.seed, &["rev-parse", "HEAD"])
    }

    /// Commits `file` on a new branch `branch` of the seed, pushes it, goes back to the branch it
    /// was on, and answers the commit id.
    pub fn push_to_new_branch(&self, branch: &str, file: &str, content: &str) -> String {
        let back = git(&self.seed, &["branch", "--show-current"]);
        git(&self.seed, &["checkout", "--quiet", "-b", branch]);
        let commit = self.push(file, content);
        git(&self.seed, &["checkout", "--quiet", &back]);
        commit
    }

    /// The remote as `origin` names it.
    pub fn remote_url(&self) -> String {
        self.remote.to_string_lossy().into_owned()
    }
}

/// Writes `content` to `path`, making its directories.
fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// The git-crypt fixture: `secret.txt` committed encrypted, and the exported key.
pub fn git_crypt_fixture() -> (Repos, PathBuf) {
    let installed = Command::new("git-crypt").arg("--version").output().is_ok();
    assert!(
        installed,
        "git-crypt is required: apt-get install -y git-crypt"
    );
    let fx = Repos::new();
    let key = fx.root.path().join("git-crypt.key");
    let run = |args: &[&str]| {
        let out = Command::new("git-crypt")
            .args(args)
            .current_dir(&fx.seed)
            .output()
            .expect("git-crypt runs");
        assert!(
            out.status.success(),
            "git-crypt {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    run(&["export-key", &key.to_string_lossy()]);
    fx.push(
        ".gitattributes",
        "secret.txt filter=git-crypt diff=git-crypt\n",
    );
    fx.push("secret.txt", "the plaintext secret\n");
    (fx, key)
}
