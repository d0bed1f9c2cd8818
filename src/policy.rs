//! Per-key policy: what each caller (a named token) may hold and spend.
//!
//! The operator writes it in `API_KEY_POLICY_FILE`, a TOML file beside the tokens file, keyed by
//! the same names. It is a file of its own, not more columns in the tokens file, because the two
//! are kept differently: the tokens are a secret (a Kubernetes Secret, mode 0600, closed to
//! runs), the policy is configuration anyone may read (a ConfigMap), and it is reloaded while the
//! gateway runs; the tokens are not. Without the file every key gets [`KeyPolicy::default`]:
//! weight 1 and no per-key limit, so dispatch is already fair between keys and only the global
//! bounds apply.
//!
//! ```toml
//! # Every key not named below, and every field a key's table leaves out.
//! [defaults]
//! max_concurrent = 4        # runs of one key at once (jobs and chat together)
//! max_queued = 50           # runs of one key waiting for a slot
//!
//! [keys.ci]
//! weight = 3                # share of the slots when keys compete: 3 runs of ci for 1 of a weight-1 key
//! budget_usd = 20.0         # spend per window; at or over it, submissions get 429 insufficient_quota
//! budget_tokens = 5000000   # input + output tokens per window
//! budget_window = "1d"      # window length (humantime: 30s, 1h, 1d, 7d)
//! max_budget_usd_per_job = 2.5  # each run's --max-budget-usd cap
//! ```
//!
//! Windows are fixed, not rolling: a window of length `w` starts at every multiple of `w` since
//! the Unix epoch (UTC), so `1d` windows are UTC days and every replica agrees on the window
//! without talking. What a key spent is charged to the window in which its run ended.
//!
//! [`Policies`] holds the policy in force. [`Policies::reload`] reads the file again (on SIGHUP,
//! and when the watcher sees the file change): a file that does not parse, or names a key no
//! token has, leaves the policy in force and logs one error line. A change applies to the next
//! admission; queued jobs keep their place.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone as _, Utc};
use gateway_layers::admission::KeyLimits;
use serde::Deserialize;

/// The largest weight: a key with weight `w` gets `w` runs for each run of a weight-1 key, and a
/// bound keeps a mistyped weight from starving every other key for hours.
pub const MAX_WEIGHT: u32 = 1000;

/// What one key may hold and spend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPolicy {
    /// The key's share of the run slots (1 to [`MAX_WEIGHT`]) and its bounds on runs at once
    /// (jobs and chat together) and runs waiting, as the admission gauge reads them; a bound of
    /// `None` leaves only the global one.
    pub limits: KeyLimits,
    /// What the key may spend per window, when limited.
    pub budget: Option<Budget>,
    /// The `--max-budget-usd` each run of this key gets at most (a caller may ask for less).
    pub max_budget_usd_per_job: Option<f64>,
}

/// A spend limit per fixed window.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// USD per window (the runs' `total_cost_usd` added up), when limited.
    pub usd: Option<f64>,
    /// Input plus output tokens per window, when limited.
    pub tokens: Option<u64>,
    /// The window's length.
    pub window: Duration,
}

impl Budget {
    /// The window `at` falls in: its start and its end (the reset time).
    pub fn window_at(&self, at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let length = i64::try_from(self.window.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let now = at.timestamp_micros();
        let start = now.div_euclid(length) * length;
        let start_at = Utc.timestamp_micros(start).single().unwrap_or(at);
        let end_at = Utc
            .timestamp_micros(start.saturating_add(length))
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (start_at, end_at)
    }

    /// Whether `spent` has used up this budget.
    pub fn is_spent(&self, spent: &Spend) -> bool {
        self.usd.is_some_and(|usd| spent.usd >= usd)
            || self.tokens.is_some_and(|tokens| spent.tokens >= tokens)
    }
}

/// What a key spent in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// USD, from the runs' reported cost.
    pub usd: f64,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// The whole policy: defaults, and the keys that differ.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyBook {
    defaults: KeyPolicy,
    keys: HashMap<String, KeyPolicy>,
}

impl PolicyBook {
    /// The policy of the key named `name` (its own table, or the defaults).
    pub fn for_key(&self, name: &str) -> &KeyPolicy {
        self.keys.get(name).unwrap_or(&self.defaults)
    }

    /// The policy of every key not named in the file.
    pub fn defaults(&self) -> &KeyPolicy {
        &self.defaults
    }

    /// The keys the file names, with their policies.
    pub fn named(&self) -> impl Iterator<Item = (&str, &KeyPolicy)> {
        self.keys
            .iter()
            .map(|(name, policy)| (name.as_str(), policy))
    }

    /// Reads a policy file's text. `known` are the names of the configured tokens: a table for
    /// any other name is a mistake (a typo would otherwise leave a key unlimited), so it is an
    /// error.
    pub fn parse<'a>(
        text: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError(one_line(&e.to_string())))?;
        let defaults = file.defaults.resolve(&KeyPolicy::default(), "defaults")?;
        let known: Vec<&str> = known.into_iter().collect();
        let mut keys = HashMap::new();
        for (name, table) in file.keys {
            if !known.contains(&name.as_str()) {
                return Err(PolicyError(format!(
                    "[keys.{name}]: no token is named {name:?} (names: {})",
                    known.join(", ")
                )));
            }
            let policy = table.resolve(&defaults, &format!("keys.{name}"))?;
            keys.insert(name, policy);
        }
        Ok(Self { defaults, keys })
    }
}

/// Why a policy file was refused: one line naming the table and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The file as written: every field optional, so a key's table inherits what it leaves out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    defaults: PolicyTable,
    #[serde(default)]
    keys: HashMap<String, PolicyTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    weight: Option<u32>,
    max_concurrent: Option<usize>,
    max_queued: Option<usize>,
    budget_usd: Option<f64>,
    budget_tokens: Option<u64>,
    budget_window: Option<String>,
    max_budget_usd_per_job: Option<f64>,
}

impl PolicyTable {
    /// This table over `base`, checked.
    fn resolve(self, base: &KeyPolicy, table: &str) -> Result<KeyPolicy, PolicyError> {
        let bad = |field: &str, why: &str| PolicyError(format!("[{table}] {field}: {why}"));
        let weight = self.weight.unwrap_or(base.limits.weight);
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(bad("weight", &format!("must be 1 to {MAX_WEIGHT}")));
        }
        if self.max_concurrent == Some(0) {
            return Err(bad(
                "max_concurrent",
                "must be at least 1 (remove the token to shut a key out)",
            ));
        }
        for (field, value) in [
            ("budget_usd", self.budget_usd),
            ("max_budget_usd_per_job", self.max_budget_usd_per_job),
        ] {
            if value.is_some_and(|usd| !usd.is_finite() || usd < 0.0) {
                return Err(bad(field, "must be a number of USD, 0 or more"));
            }
        }
        let window = match &self.budget_window {
            Some(text) => {
                let window = humantime::parse_duration(text).map_err(|e| {
                    bad(
                        "budget_window",
                        &format!("{e} (write e.g. \"30s\", \"1h\", \"1d\")"),
                    )
                })?;
                if window < Duration::from_secs(1) {
                    return Err(bad("budget_window", "must be at least 1s"));
                }
                Some(window)
            }
            None => None,
        };
        let limits_given = self.budget_usd.is_some() || self.budget_tokens.is_some();
        let budget = match (&base.budget, limits_given, window) {
            (_, true, None) if base.budget.is_none() => {
                return Err(bad(
                    "budget_window",
                    "a budget needs a window (e.g. budget_window = \"1d\")",
                ));
            }
            (base_budget, _, window) => {
                let usd = self.budget_usd.or(base_budget.as_ref().and_then(|b| b.usd));
                let tokens = self
                    .budget_tokens
                    .or(base_budget.as_ref().and_then(|b| b.tokens));
                let window = window.or(base_budget.as_ref().map(|b| b.window));
                match window {
                    Some(window) if usd.is_some() || tokens.is_some() => Some(Budget {
                        usd,
                        tokens,
                        window,
                    }),
                    _ => None,
                }
            }
        };
        Ok(KeyPolicy {
            limits: KeyLimits {
                weight,
                max_concurrent: self.max_concurrent.or(base.limits.max_concurrent),
                max_queued: self.max_queued.or(base.limits.max_queued),
            },
            budget,
            max_budget_usd_per_job: self.max_budget_usd_per_job.or(base.max_budget_usd_per_job),
        })
    }
}

/// The first line of a parse error (TOML errors span several lines with a source excerpt).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The policy in force, shared by every part that admits, dispatches or charges runs.
///
/// Cheap to read: [`current`](Self::current) clones an [`Arc`]. A reload swaps the whole book in
/// one step, so a reader never sees half of an old file and half of a new one.
#[derive(Debug)]
pub struct Policies {
    /// The file, when one is configured.
    path: Option<PathBuf>,
    /// Names of the configured tokens.
    known: Vec<String>,
    current: RwLock<Arc<PolicyBook>>,
    /// What the file looked like when it was last read, so the watcher rereads it only when it
    /// changed.
    seen: RwLock<Option<FileStamp>>,
    /// The file as it was when a reload last failed, so one bad file is reported once even when
    /// both SIGHUP and the watcher's poll read it.
    failed: RwLock<Option<Option<FileStamp>>>,
}

/// Enough of a file's metadata to notice a change (a ConfigMap update swaps a symlink, which
/// changes all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

impl Policies {
    /// Every key on [`KeyPolicy::default`]; nothing to reload.
    pub fn fixed(book: PolicyBook) -> Self {
        Self {
            path: None,
            known: Vec::new(),
            current: RwLock::new(Arc::new(book)),
            seen: RwLock::new(None),
            failed: RwLock::new(None),
        }
    }

    /// Reads `path` for the tokens named `known`; at start a bad file is an error (the gateway
    /// exits 2 with its line).
    pub fn load(path: &Path, known: Vec<String>) -> Result<Self, PolicyError> {
        let stamp = FileStamp::of(path);
        let book = read_book(path, &known)?;
        Ok(Self {
            path: Some(path.to_owned()),
            known,
            current: RwLock::new(Arc::new(book)),
            seen: RwLock::new(stamp),
            failed: RwLock::new(None),
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<PolicyBook> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The file, when one is configured.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads the file again. `Ok(true)`: the new policy is in force; `Ok(false)`: no file is
    /// configured; an error leaves the policy in force (the caller logs it).
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = FileStamp::of(path);
        *self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stamp;
        let book = read_book(path, &self.known)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(book);
        Ok(true)
    }

    /// Whether the file looks different from when it was last read.
    fn changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = FileStamp::of(path);
        *self
            .seen
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            != now
    }

    /// Reloads on SIGHUP and when the file changes (checked every `poll`), logging the outcome,
    /// until the returned task is aborted. Does nothing without a file.
    pub fn watch(self: &Arc<Self>, poll: Duration) -> Option<tokio::task::JoinHandle<()>> {
        self.path.as_ref()?;
        let policies = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut hangup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(signal) => Some(signal),
                    Err(e) => {
                        tracing::warn!(
                            "SIGHUP cannot be watched ({e}); the policy file is still polled"
                        );
                        None
                    }
                };
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let hup = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let asked = tokio::select! {
                    _ = hup => true,
                    _ = tick.tick() => false,
                };
                if asked || policies.changed() {
                    policies.log_reload(asked);
                }
            }
        }))
    }

    fn log_reload(&self, asked: bool) {
        let path = self.path.as_deref().unwrap_or(Path::new("")).display();
        let why = if asked { "SIGHUP" } else { "file changed" };
        let stamp = self.path.as_deref().map(FileStamp::of);
        let mut failed = self
            .failed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.reload() {
            Ok(_) => {
                *failed = None;
                tracing::info!(%path, why, "key policy reloaded");
            }
            // The same bad file read again (a SIGHUP after the poll saw it): said already.
            Err(e) if failed.as_ref() == stamp.as_ref() => {
                tracing::debug!(%path, why, "API_KEY_POLICY_FILE still not valid: {e}");
            }
            Err(e) => {
                *failed = stamp;
                tracing::error!(
                    %path,
                    why,
                    "API_KEY_POLICY_FILE not reloaded, the policy in force stays: {e}"
                );
            }
        }
    }
}

fn read_book(path: &Path, known: &[String]) -> Result<PolicyBook, PolicyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError(format!("{} cannot be read: {e}", path.display())))?;
    PolicyBook::parse(&text, known.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 3] = ["alice", "bob", "ci"];

    #[test]
    fn keys_inherit_the_defaults_and_override_what_they_name() {
        let book = PolicyBook::parse(
            r#"
            [defaults]
            max_concurrent = 4
            max_queued = 50
            budget_usd = 1.5
            budget_window = "1h"

            [keys.ci]
            weight = 3
            max_queued = 5
            budget_tokens = 1000
            max_budget_usd_per_job = 0.25
            "#,
            KEYS,
        )
        .unwrap();
        let ci = book.for_key("ci");
        assert_eq!(ci.limits.weight, 3);
        assert_eq!(ci.limits.max_concurrent, Some(4));
        assert_eq!(ci.limits.max_queued, Some(5));
        assert_eq!(ci.max_budget_usd_per_job, Some(0.25));
        assert_eq!(
            ci.budget,
            Some(Budget {
                usd: Some(1.5),
                tokens: Some(1000),
                window: Duration::from_secs(3600)
            })
        );
        let alice = book.for_key("alice");
        assert_eq!(alice.limits.weight, 1);
        assert_eq!(alice.limits.max_queued, Some(50));
        assert_eq!(alice.budget.as_ref().unwrap().tokens, None);
        assert_eq!(book.for_key("nobody-configured"), alice);
    }

    #[test]
    fn an_empty_file_is_every_key_on_the_defaults() {
        let book = PolicyBook::parse("", KEYS).unwrap();
        assert_eq!(book.for_key("alice"), &KeyPolicy::default());
    }

    #[test]
    fn mistakes_are_refused_with_the_table_and_field_named() {
        for (text, expected) in [
            (
                "[keys.mallory]\nweight = 2",
                "no token is named \"mallory\"",
            ),
            (
                "[keys.bob]\nweight = 0",
                "[keys.bob] weight: must be 1 to 1000",
            ),
            ("[keys.bob]\nweight = 1001", "weight: must be 1 to 1000"),
            (
                "[keys.bob]\nmax_concurrent = 0",
                "max_concurrent: must be at least 1",
            ),
            (
                "[keys.bob]\nbudget_usd = -1.0\nbudget_window = \"1h\"",
                "budget_usd",
            ),
            ("[keys.bob]\nbudget_usd = 1.0", "a budget needs a window"),
            (
                "[keys.bob]\nbudget_usd = 1.0\nbudget_window = \"soon\"",
                "budget_window",
            ),
            (
                "[keys.bob]\nbudget_usd = 1.0\nbudget_window = \"10ms\"",
                "at least 1s",
            ),
            ("[keys.bob]\nweigth = 2", "unknown field"),
            ("[keys.bob\nweight = 2", "TOML"),
            ("[defaults]\nmax_queued = \"many\"", "invalid type"),
        ] {
            let err = PolicyBook::parse(text, KEYS).unwrap_err().to_string();
            assert!(
                err.contains(expected) || (expected == "TOML" && !err.is_empty()),
                "{text:?}: {err}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn windows_are_fixed_and_aligned_to_the_epoch() {
        let budget = Budget {
            usd: Some(1.0),
            tokens: None,
            window: Duration::from_secs(86_400),
        };
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 18, 30, 5).unwrap();
        let (start, end) = budget.window_at(at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap());
        assert!(budget.is_spent(&Spend {
            usd: 1.0,
            tokens: 0
        }));
        assert!(!budget.is_spent(&Spend {
            usd: 0.99,
            tokens: u64::MAX
        }));
    }

    #[test]
    fn a_bad_reload_keeps_the_policy_in_force() {
        let dir = std::env::temp_dir().join(format!("policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        std::fs::write(&path, "[keys.bob]\nweight = 2\n").unwrap();
        let known = KEYS.iter().map(|k| k.to_string()).collect();
        let policies = Policies::load(&path, known).unwrap();
        assert_eq!(policies.current().for_key("bob").limits.weight, 2);

        std::fs::write(&path, "[keys.bob]\nweight = 5\nmax_queued = 3\n").unwrap();
        assert!(policies.changed());
        assert_eq!(policies.reload(), Ok(true));
        assert_eq!(policies.current().for_key("bob").limits.weight, 5);
        assert!(!policies.changed());

        std::fs::write(&path, "[keys.bob]\nweight = \"heavy\"\n").unwrap();
        assert!(policies.reload().is_err());
        assert_eq!(policies.current().for_key("bob").limits.weight, 5);
        assert_eq!(policies.current().for_key("bob").limits.max_queued, Some(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
