//! Names of workspace directories: unique, and recognisable so a later process can sweep them.

use std::ffi::OsStr;

/// Every workspace directory is named `ws-<uuid>`; nothing else under `JOBS_DIR` is ever removed.
const PREFIX: &str = "ws-";

/// A fresh, unique workspace directory name.
pub(crate) fn fresh() -> String {
    format!("{PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `name` is one [`fresh`] could have produced (prefix and a well-formed uuid), so an
/// operator's `ws-notes` directory is not taken for a leftover.
pub(crate) fn is_workspace(name: &OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(PREFIX))
        .is_some_and(|id| id.len() == 32 && uuid::Uuid::try_parse(id).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_are_recognised_and_distinct() {
        let (a, b) = (fresh(), fresh());
        assert_ne!(a, b);
        assert!(is_workspace(OsStr::new(&a)));
    }

    #[test]
    fn other_names_are_not_workspaces() {
        for name in [
            "ws-",
            "ws-notes",
            "workspace",
            "x-0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_workspace(OsStr::new(name)), "{name}");
        }
        assert!(!is_workspace(OsStr::new(
            "ws-01234567-89ab-cdef-0123-456789abcdef"
        )));
    }
}
