//! The environment the agent runs with: an allow-list copied from the gateway's own.
//!
//! The agent runs arbitrary Bash, so it must never see the gateway's secrets (seed defect 4). The
//! child starts from an empty environment and receives only what the CLI needs to find its tools,
//! reach its API (directly, through a proxy, on Bedrock or on Vertex) and render text.

use std::ffi::{OsStr, OsString};

/// Variables copied when present, by exact name.
const ALLOWED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "IS_SANDBOX",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUD_ML_REGION",
    "ANTHROPIC_VERTEX_PROJECT_ID",
];

/// Variables copied when present, by prefix: locale, the CLI's own settings and cloud credentials.
const ALLOWED_PREFIXES: &[&str] = &["LC_", "ANTHROPIC_", "CLAUDE_", "AWS_"];

/// The gateway's own settings. None of them is ever given to the agent, even when a setting names
/// it for pass-through: the deny-list wins over every allow rule.
pub const GATEWAY_SETTINGS: &[&str] = &[
    "API_BEARER_TOKEN",
    "API_BEARER_TOKENS_FILE",
    "LISTEN_ADDR",
    "WORKSPACE_DIR",
    "JOBS_DIR",
    "GIT_CRYPT_KEY",
    "BASE_BRANCH",
    "MAX_CONCURRENCY",
    "MAX_QUEUE_DEPTH",
    "JOB_TTL_SECONDS",
    "MAX_FINISHED_JOBS",
    "MAX_OUTPUT_BYTES",
    "MAX_STORED_BYTES",
    "FETCH_DEBOUNCE_SECONDS",
    "SUPPORTED_MODELS",
    "DEFAULT_MODEL",
    "OPENAI_COMPAT_AGENT",
    "OPENAI_COMPAT_BUDGET_USD",
    "OPENAI_COMPAT_TIMEOUT_SECONDS",
    "CLAUDE_BIN",
    "AGENT_ENV_PASSTHROUGH",
    "AGENT_INACTIVITY_TIMEOUT_SECONDS",
    "MAX_BODY_BYTES",
    "HEADER_READ_TIMEOUT_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "LOG_FORMAT",
];

/// Prefixes never passed on: any bearer-token variant a future setting might add.
const DENIED_PREFIXES: &[&str] = &["API_BEARER_"];

/// Selects, from `source` (a snapshot of the gateway's environment), the variables the agent gets.
///
/// A variable is passed when its name is on the built-in allow-list or in `extra` (a setting's
/// pass-through list), and is not a gateway setting ([`GATEWAY_SETTINGS`], an `API_BEARER_*`
/// name, or a name in `deny`). Names that are not valid UTF-8 are dropped; values are copied
/// byte for byte. The order of `source` is kept.
pub fn allowed_env(
    source: &[(OsString, OsString)],
    extra: &[String],
    deny: &[String],
) -> Vec<(OsString, OsString)> {
    source
        .iter()
        .filter(|(name, _)| is_allowed(name, extra, deny))
        .cloned()
        .collect()
}

fn is_allowed(name: &OsStr, extra: &[String], deny: &[String]) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let denied = GATEWAY_SETTINGS.contains(&name)
        || DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
        || deny.iter().any(|d| d == name);
    if denied {
        return false;
    }
    ALLOWED_NAMES.contains(&name)
        || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
        || extra.iter().any(|e| e == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_variables_the_cli_needs() {
        let env = source(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("LC_ALL", "C.UTF-8"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),
            ("CLAUDE_CODE_USE_BEDROCK", "1"),
            ("AWS_REGION", "eu-west-1"),
            ("https_proxy", "http://proxy:3128"),
            ("IS_SANDBOX", "1"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
        ]);
        assert_eq!(names(&allowed_env(&env, &[], &[])), names(&env));
    }

    #[test]
    fn drops_everything_else() {
        let env = source(&[
            ("PATH", "/usr/bin"),
            ("DATABASE_URL", "postgres://secret"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("LD_PRELOAD", "/evil.so"),
        ]);
        assert_eq!(names(&allowed_env(&env, &[], &[])), ["PATH"]);
    }

    #[test]
    fn never_passes_the_bearer_token_even_when_named_for_pass_through() {
        let env = source(&[
            ("API_BEARER_TOKEN", "secret"),
            ("API_BEARER_TOKENS_FILE", "/secrets/tokens"),
            ("API_BEARER_TOKEN_OLD", "older-secret"),
            ("CLAUDE_BIN", "/usr/local/bin/claude"),
            ("GIT_CRYPT_KEY", "/secrets/key"),
            ("HOME", "/root"),
        ]);
        let extra: Vec<String> = ["API_BEARER_TOKEN", "API_BEARER_TOKEN_OLD", "GIT_CRYPT_KEY"]
            .map(String::from)
            .into();
        assert_eq!(names(&allowed_env(&env, &extra, &[])), ["HOME"]);
    }

    #[test]
    fn passes_extra_names_a_setting_adds() {
        let env = source(&[("GH_HOST", "github.example"), ("OTHER", "x")]);
        let extra = vec!["GH_HOST".to_string()];
        assert_eq!(names(&allowed_env(&env, &extra, &[])), ["GH_HOST"]);
    }

    #[test]
    fn a_caller_deny_list_overrides_the_allow_list() {
        let env = source(&[("CLAUDE_NEW_GATEWAY_SETTING", "x"), ("PATH", "/bin")]);
        let deny = vec!["CLAUDE_NEW_GATEWAY_SETTING".to_string()];
        assert_eq!(names(&allowed_env(&env, &[], &deny)), ["PATH"]);
    }

    #[test]
    fn values_are_copied_unchanged() {
        let env = source(&[("LANG", "de_DE.UTF-8")]);
        assert_eq!(allowed_env(&env, &[], &[]), env);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_dropped() {
        use std::os::unix::ffi::OsStringExt;
        let env = vec![(OsString::from_vec(vec![b'P', 0xff]), OsString::from("x"))];
        assert!(allowed_env(&env, &["P\u{fffd}".to_string()], &[]).is_empty());
    }
}
