//! Scratch mode: without a base repository, a workspace is an empty directory.

use std::path::Path;

use super::error::WorkspaceError;

/// Creates the empty directory `dest`; fails if anything already exists there, so two jobs can
/// never share one.
pub(crate) async fn create(dest: &Path) -> Result<(), WorkspaceError> {
    tokio::fs::create_dir(dest).await.map_err(|e| {
        WorkspaceError::new(
            format!("could not create scratch workspace {}", dest.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_an_empty_directory_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("ws");
        create(&dest).await.expect("created");
        assert_eq!(std::fs::read_dir(&dest).expect("dir").count(), 0);

        let err = create(&dest).await.expect_err("already exists");
        assert!(
            err.to_string()
                .starts_with("could not create scratch workspace"),
            "{err}"
        );
    }
}
