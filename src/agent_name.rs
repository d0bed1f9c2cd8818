//! What counts as a plain agent name: it reaches the CLI as the value of `--agent`, so it must
//! not look like a flag, a path or anything a shell or file system would read specially.

/// The longest agent name accepted.
pub const MAX_AGENT_NAME_LEN: usize = 128;

/// Checks that `name` is a plain agent name: ASCII letters, digits, `-`, `_`, `.` and `:`,
/// not starting with `-` or `.`, at most [`MAX_AGENT_NAME_LEN`] bytes. Says why when it is not.
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the agent name is empty");
    }
    if name.len() > MAX_AGENT_NAME_LEN {
        return Err("the agent name is longer than 128 characters");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err("an agent name may not start with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("an agent name may hold only letters, digits, '-', '_', '.' and ':'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn plain_names_pass() {
        for name in [
            "general-purpose",
            "recruiter-triage",
            "a",
            "plugin:agent_1.2",
        ] {
            assert!(check(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn flags_paths_and_shell_text_are_refused() {
        for name in [
            "",
            "--model",
            "-x",
            "../etc",
            "a/b",
            "a b",
            "$(id)",
            "é",
            &"a".repeat(129),
        ] {
            assert!(check(name).is_err(), "{name}");
        }
    }
}
