//! What a run leaves in the agent's HOME, and its removal.
//!
//! Even with `--no-session-persistence` the CLI makes, per working directory, a
//! `~/.claude/projects/<slug of the cwd>/` folder and, per session, `~/.claude/session-env/<id>/`.
//! Every run has a fresh workspace, so left alone these grow by one folder per run, forever (the
//! service this gateway replaced did). The guard here removes both when the run ends, however it ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The folder name the CLI derives from a working directory: every character that is not an
/// ASCII letter or digit becomes `-`.
pub(crate) fn project_slug(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The agent's HOME: the last `HOME` in the environment the agent is given.
pub(crate) fn agent_home(env: &[(OsString, OsString)]) -> Option<PathBuf> {
    env.iter()
        .rev()
        .find(|(name, _)| name == "HOME")
        .map(|(_, value)| PathBuf::from(value))
}

/// Removes a run's leftovers from the agent's HOME when dropped.
#[derive(Debug)]
pub(crate) struct HomeLeftovers {
    home: Option<PathBuf>,
    workspace: PathBuf,
    session_id: Option<String>,
}

impl HomeLeftovers {
    /// Watches the leftovers of a run in `workspace` for the agent whose HOME is `home`.
    pub(crate) fn new(home: Option<PathBuf>, workspace: &Path) -> Self {
        Self {
            home,
            workspace: workspace.to_path_buf(),
            session_id: None,
        }
    }

    /// Records the session id once the run reports it.
    pub(crate) fn session(&mut self, id: Option<&str>) {
        self.session_id = id.map(str::to_owned);
    }
}

impl Drop for HomeLeftovers {
    fn drop(&mut self) {
        let Some(home) = self.home.take() else {
            return;
        };
        let claude = home.join(".claude");
        let mut doomed = vec![claude.join("projects").join(project_slug(&self.workspace))];
        // A session id is a uuid from the CLI; refuse anything that could step out of the folder.
        if let Some(id) = self.session_id.take().filter(|id| {
            !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }) {
            doomed.push(claude.join("session-env").join(id));
        }
        let remove = move || {
            for dir in doomed {
                if let Err(error) = crate::contain::remove_tree(&dir) {
                    if error.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), %error, "cannot remove run leftovers");
                    }
                }
            }
        };
        // Off the response path: on the blocking pool when there is a runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_replaces_everything_but_letters_and_digits() {
        assert_eq!(
            project_slug(Path::new("/tmp/jobs/ws-1a2b_c.d")),
            "-tmp-jobs-ws-1a2b-c-d"
        );
    }

    #[test]
    fn dropping_removes_the_project_and_session_folders_only() {
        let home = tempfile::tempdir().unwrap();
        let workspace = Path::new("/work/jobs/ws-123");
        let project = home
            .path()
            .join(".claude/projects")
            .join(project_slug(workspace));
        let session = home.path().join(".claude/session-env/abc-123");
        let other = home.path().join(".claude/projects/-somewhere-else");
        for dir in [&project, &session, &other] {
            std::fs::create_dir_all(dir.join("memory")).unwrap();
        }
        let mut guard = HomeLeftovers::new(Some(home.path().to_path_buf()), workspace);
        guard.session(Some("abc-123"));
        drop(guard);
        assert!(!project.exists());
        assert!(!session.exists());
        assert!(other.exists(), "other runs' folders stay");
    }
}
