//! Decrypting a workspace's git-crypt files with the deployment's key.

use std::ffi::OsStr;
use std::path::Path;

use super::error::WorkspaceError;
use super::git::Tool;

/// Whether the key file is present. Asked at every provision, so a key mounted after start-up
/// is used, and one removed is no longer tried.
pub(crate) async fn key_present(key: &Path) -> bool {
    tokio::fs::metadata(key).await.is_ok_and(|m| m.is_file())
}

/// Runs `git-crypt unlock <key>` in `workspace`.
///
/// Failing here fails the provision: an agent working on ciphertext would produce wrong
/// results without anyone noticing.
pub(crate) async fn unlock(
    git_crypt: &Tool,
    workspace: &Path,
    key: &Path,
) -> Result<(), WorkspaceError> {
    git_crypt
        .run(workspace, [OsStr::new("unlock"), key.as_os_str()])
        .await
        .map(drop)
        .map_err(|e| {
            WorkspaceError::new(
                format!(
                    "git-crypt unlock of {} with key {} failed",
                    workspace.display(),
                    key.display()
                ),
                e,
            )
        })
}
