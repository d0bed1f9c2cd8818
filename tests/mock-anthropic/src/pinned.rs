//! Where the Claude Code CLI the mock is made for is installed: one finder for every test, example
//! and bench of the workspace.

use std::path::{Path, PathBuf};

/// The pinned Claude Code CLI (`tests/cli/package.json`) as the workspace's test command
/// (`./scripts/test`) installs it: `tests/cli/node_modules/.bin/claude`.
///
/// # Panics
/// When it is not installed, saying how to install it: a test that needs the CLI fails rather
/// than passing having tested nothing.
pub fn pinned_cli() -> PathBuf {
    // This crate lives in the workspace's `tests/`, next to `tests/cli`.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in tests/");
    let bin = tests.join("cli/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "the pinned claude CLI is not installed at {}: run ./scripts/test (it installs it), or \
         `npm ci --prefix tests/cli`",
        bin.display()
    );
    bin
}
