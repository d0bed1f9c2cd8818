//! Finding and removing the workspaces an earlier process left behind (a crash, a `SIGKILL`).

use std::io;
use std::path::{Path, PathBuf};

use super::name;

/// The workspace directories directly under `jobs_dir`: real directories (not symlinks, not
/// files) whose name is one this provisioner generates. Anything else is never touched.
pub(crate) async fn find_leftovers(jobs_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut entries = tokio::fs::read_dir(jobs_dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        // `DirEntry::file_type` does not follow symlinks: a `ws-…` link to elsewhere is kept.
        let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
        if is_dir && name::is_workspace(&entry.file_name()) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes `dirs`, logging each failure; returns how many were removed.
pub(crate) async fn remove_all(dirs: Vec<PathBuf>) -> usize {
    let mut removed = 0;
    for dir in dirs {
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove leftover workspace")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_workspace_directories_are_swept() {
        let jobs = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let j = jobs.path();
        let leftover = j.join(name::fresh());
        std::fs::create_dir_all(leftover.join(".git/objects")).expect("mkdir");
        std::fs::write(leftover.join("main.tf"), "x").expect("write");
        let file_named_like_one = j.join(name::fresh());
        std::fs::write(&file_named_like_one, "not a dir").expect("write");
        let link_named_like_one = j.join(name::fresh());
        std::os::unix::fs::symlink(outside.path(), &link_named_like_one).expect("symlink");
        std::fs::write(outside.path().join("precious"), "keep").expect("write");
        std::fs::create_dir(j.join("ws-notes")).expect("mkdir");
        std::fs::create_dir(j.join("other")).expect("mkdir");

        let found = find_leftovers(j).await.expect("readable");
        assert_eq!(found, vec![leftover.clone()]);
        assert_eq!(remove_all(found).await, 1);

        assert!(!leftover.exists());
        assert!(file_named_like_one.is_file());
        assert!(link_named_like_one.join("precious").is_file());
        assert!(j.join("ws-notes").is_dir());
        assert!(j.join("other").is_dir());
    }
}
