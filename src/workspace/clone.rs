//! Cloning a workspace from the warm base.

use std::ffi::OsStr;
use std::path::Path;

use super::error::WorkspaceError;
use super::git::Tool;

/// `git clone --local <base> <dest>`: the object store is hardlinked, so the cost is the
/// checkout of the working tree, not a copy of history. The clone checks out the base's
/// current branch, which a refresh has just reset to the remote branch.
pub(crate) async fn clone_local(
    git: &Tool,
    base: &Path,
    dest: &Path,
) -> Result<(), WorkspaceError> {
    let cwd = dest.parent().unwrap_or(Path::new("/"));
    let args: [&OsStr; 6] = [
        OsStr::new("clone"),
        OsStr::new("--local"),
        OsStr::new("--quiet"),
        OsStr::new("--"),
        base.as_os_str(),
        dest.as_os_str(),
    ];
    git.run(cwd, args).await.map(drop).map_err(|e| {
        WorkspaceError::new(
            format!("clone of {} into {} failed", base.display(), dest.display()),
            e,
        )
    })
}

/// Points the clone's `origin` at the base's own remote, so `git fetch`/`git push` in the
/// workspace talk to the real repository rather than to the shared base directory.
pub(crate) async fn set_origin(git: &Tool, dest: &Path, url: &str) -> Result<(), WorkspaceError> {
    git.run(dest, ["remote", "set-url", "origin", url])
        .await
        .map(drop)
        .map_err(|e| {
            WorkspaceError::new(
                format!("setting the origin of {} failed", dest.display()),
                e,
            )
        })
}
