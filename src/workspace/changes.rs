//! What a run changed, and what delivering it did: the shapes the job record carries
//! (`changes`, `delivery`) and what a submission asks for (`deliver`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the run changed in its checkout: the commits it made and the difference of its final
/// tree (tracked changes and untracked files, ignored ones left out) against the commit it
/// started from. `GET /jobs/{id}/diff` answers the patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Changes {
    /// The commit the run's checkout started at; the patch applies to it.
    pub base_commit: String,
    /// Where the checkout's `HEAD` ended (the last commit the run made, or the base commit);
    /// `null` when the run left no readable `HEAD`.
    pub head_commit: Option<String>,
    /// The commits the run made on top of the base, oldest first (at most 100 listed).
    #[serde(default)]
    pub commits: Vec<String>,
    /// Every changed file (at most 1000 listed; `truncated` then says so).
    pub files: Vec<ChangedFile>,
    /// Whether the patch (bounded by `MAX_DIFF_BYTES`) or the file list was cut. A cut patch
    /// ends at a file boundary and still applies: it carries the first files whole.
    pub truncated: bool,
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangedFile {
    /// Its path in the repository.
    pub path: String,
    /// `added`, `modified`, `deleted` or `type_changed`.
    pub status: String,
    /// Lines added; `null` for a binary or encrypted file.
    pub additions: Option<u64>,
    /// Lines removed; `null` for a binary or encrypted file.
    pub deletions: Option<u64>,
    /// The file is encrypted in the repository (git-crypt): the patch leaves it out, so its
    /// content never appears in plaintext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// `deliver` of `POST /execute`: commit what the run left uncommitted and push it as a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverRequest {
    /// The branch pushed to the base's origin (a valid git branch name; the base branch only
    /// when `DELIVERY_ALLOW_BASE_BRANCH` is set).
    pub branch: String,
    /// The message of the commit of the uncommitted changes; a default names the job.
    #[serde(default)]
    pub commit_message: Option<String>,
}

/// What delivery did: the branch, the commit, and when it was pushed or why it was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// The branch asked for.
    pub branch: String,
    /// The commit pushed (or that would have been).
    pub commit: Option<String>,
    /// When the origin took it (RFC 3339); `null` when it did not.
    pub pushed_at: Option<String>,
    /// Why nothing was pushed (the remote refused, nothing to deliver, ...). A delivery error
    /// does not change the job's status.
    pub error: Option<String>,
}

/// The longest branch name accepted.
const MAX_BRANCH: usize = 200;

/// The longest commit message accepted.
pub const MAX_COMMIT_MESSAGE: usize = 16 * 1024;

/// Checks `branch` the way `git check-ref-format --branch` would, and a little stricter (a
/// plain set of characters), so it can be handed to git as an argument with no surprise.
pub fn check_branch(branch: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("branch {branch:?} is not usable: {why}"));
    if branch.is_empty() || branch.len() > MAX_BRANCH {
        return bad("it must have 1 to 200 characters");
    }
    if !branch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return bad("only letters, digits, '.', '_', '-' and '/' are allowed");
    }
    if branch.starts_with('-') || branch == "HEAD" {
        return bad("it must not start with '-' or be HEAD");
    }
    if branch.contains("..") || branch.ends_with(".lock") || branch.ends_with('.') {
        return bad("it must not contain '..' or end with '.' or '.lock'");
    }
    if branch
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("each '/'-separated part must be non-empty and not start with '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_checked() {
        for good in ["feature/x", "gateway/job-1", "a.b_c-d", "v1"] {
            assert_eq!(check_branch(good), Ok(()), "{good}");
        }
        for bad in [
            "", "-x", "a..b", "a/", "/a", "a//b", ".a", "a/.b", "a.lock", "a b", "a~1", "a^",
            "a:b", "a@{1}", "HEAD", "a.",
        ] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert!(check_branch(&"a".repeat(201)).is_err());
    }
}
