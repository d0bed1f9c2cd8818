//! What the operator chooses: the isolation mode, where run cgroups are made, the uids runs may
//! take, where the uid locks live, and which gateway instance the runs belong to.
//!
//! Parsing lives here, not in the crate's config, so the `ISOLATION`, `RUN_UID_RANGE` and
//! `RUN_LOCK_DIR` settings can be wired in later without this module importing the rest.

use std::fmt;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The lowest uid a run may take. Uids below are system and regular accounts on every
/// distribution; above all, uid 0 must never be in a range, since killing "every process of the
/// run's uid" as root would kill the whole machine.
pub(crate) const MIN_RUN_UID: u32 = 1000;

/// The operator's choice of isolation (the `ISOLATION` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum IsolationSetting {
    /// Per-run uids when the process may switch uids, the marker fallback otherwise.
    #[default]
    Auto,
    /// Per-run uids or refuse to start: for operators who rely on runs not reaching each other.
    Uid,
    /// The marker fallback even when per-run uids are possible (debugging, or a host where the
    /// uid range cannot be reserved).
    Process,
}

impl FromStr for IsolationSetting {
    type Err = SettingError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "uid" => Ok(Self::Uid),
            "process" => Ok(Self::Process),
            _ => Err(SettingError(format!(
                "ISOLATION must be auto, uid or process, not {value:?}"
            ))),
        }
    }
}

/// Where run cgroups are made (the `RUN_CGROUP` setting).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum CgroupSetting {
    /// Under the gateway's own cgroup when it is cgroup v2 and writable; the `/proc` fallback
    /// otherwise.
    #[default]
    Auto,
    /// Never: always the `/proc` fallback.
    Off,
    /// Under this cgroup v2 directory, or refuse to start.
    Dir(PathBuf),
}

impl FromStr for CgroupSetting {
    type Err = SettingError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // The words in any case, as `ISOLATION`'s; a directory as written.
        match value.trim() {
            word if word.eq_ignore_ascii_case("auto") => Ok(Self::Auto),
            word if word.eq_ignore_ascii_case("off") => Ok(Self::Off),
            path if path.starts_with('/') => Ok(Self::Dir(PathBuf::from(path))),
            _ => Err(SettingError(format!(
                "RUN_CGROUP must be auto, off or an absolute cgroup v2 directory, not {value:?}"
            ))),
        }
    }
}

/// The uids runs may take, one per concurrent run; each run's gid is its uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunUidRange {
    /// The first uid of the range.
    first: u32,
    /// How many uids, at least one.
    count: u32,
}

impl RunUidRange {
    /// A range of `count` uids from `first`; refuses an empty range, one that starts below
    /// [`MIN_RUN_UID`], and one that reaches the invalid uid `u32::MAX` (`(uid_t)-1`).
    pub(crate) fn new(first: u32, count: u32) -> Result<Self, SettingError> {
        if count == 0 {
            return Err(SettingError("the run uid range is empty".into()));
        }
        if first < MIN_RUN_UID {
            return Err(SettingError(format!(
                "the run uid range must start at {MIN_RUN_UID} or above (not {first}): lower uids \
                 belong to system accounts"
            )));
        }
        match first.checked_add(count - 1) {
            Some(last) if last < u32::MAX - 1 => Ok(Self { first, count }),
            _ => Err(SettingError(format!(
                "the run uid range from {first} with {count} uids passes the largest valid uid"
            ))),
        }
    }

    /// The first uid.
    #[cfg(test)]
    pub(crate) fn first(&self) -> u32 {
        self.first
    }

    /// How many uids the range holds.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The last uid (inclusive).
    pub(crate) fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }

    /// Whether `uid` is in the range.
    pub(crate) fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last()).contains(&uid)
    }

    /// The `index`-th uid, wrapping around: lets the pool start each search where the last left
    /// off instead of always handing out the lowest free uid.
    pub(crate) fn nth_wrapping(&self, index: u32) -> u32 {
        self.first + index % self.count
    }
}

impl Default for RunUidRange {
    /// 61000-61999: above the ids distributions hand to people (1000-59999) and below `nobody`
    /// (65534), the same neighbourhood systemd uses for dynamic users (61184-65519) but clear of it.
    fn default() -> Self {
        Self {
            first: 61000,
            count: 1000,
        }
    }
}

impl FromStr for RunUidRange {
    type Err = SettingError;

    /// `"61000-61999"` (both ends included) or a single uid `"61000"`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = || {
            SettingError(format!(
                "RUN_UID_RANGE must look like 61000-61999 (first-last), not {value:?}"
            ))
        };
        let (first, last) = match value.trim().split_once('-') {
            Some((first, last)) => (first.trim(), last.trim()),
            None => (value.trim(), value.trim()),
        };
        let first: u32 = first.parse().map_err(|_| bad())?;
        let last: u32 = last.parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        Self::new(first, last - first + 1)
    }
}

impl fmt::Display for RunUidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last())
    }
}

/// Everything [`Containment::new`](super::Containment::new) needs.
#[derive(Debug, Clone)]
pub(crate) struct ContainSettings {
    /// Which isolation to use.
    pub(crate) isolation: IsolationSetting,
    /// The uids runs take in uid mode.
    pub(crate) uid_range: RunUidRange,
    /// Where the per-uid lock files live (uid mode): shared by every gateway process on the host,
    /// so they never hand out the same uid twice.
    pub(crate) lock_dir: PathBuf,
    /// Where run cgroups are made (`RUN_CGROUP`).
    pub(crate) cgroup: super::CgroupSetting,
    /// Names this gateway's jobs directory in every run's marker, so that after a crash the next
    /// start finds what the previous process of the same instance left (process mode).
    pub(crate) instance_key: String,
}

/// Where uid locks live unless configured: `/run` is root-owned tmpfs, emptied at boot, exactly
/// as long-lived as the processes the locks stand for.
pub(crate) const DEFAULT_LOCK_DIR: &str = "/run/claude-gateway";

/// A short, stable name for a jobs directory: 16 hex digits of the FNV-1a hash of its canonical
/// path. Stable across builds and Rust versions (unlike `DefaultHasher`), because a marker written
/// by one binary is read by the next after an upgrade-and-crash.
pub(crate) fn instance_key_for(jobs_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(jobs_dir).unwrap_or_else(|_| jobs_dir.to_path_buf());
    let mut hasher = Fnv1a::default();
    hasher.write(canonical.as_os_str().as_encoded_bytes());
    format!("{:016x}", hasher.finish())
}

/// 64-bit FNV-1a: a few lines, no dependency, and the same output everywhere.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A setting that could not be parsed: one line naming the setting and the expected form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingError(pub(super) String);

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_and_cgroup_words_parse_in_any_case_and_a_cgroup_may_be_a_directory() {
        assert_eq!("auto".parse(), Ok(IsolationSetting::Auto));
        assert_eq!(" UID ".parse(), Ok(IsolationSetting::Uid));
        assert_eq!("Process".parse(), Ok(IsolationSetting::Process));
        let err = "root".parse::<IsolationSetting>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "ISOLATION must be auto, uid or process, not \"root\""
        );
        assert_eq!("AUTO".parse(), Ok(CgroupSetting::Auto));
        assert_eq!(" Off ".parse(), Ok(CgroupSetting::Off));
        let dir = "/sys/fs/cgroup/GW".parse::<CgroupSetting>();
        assert_eq!(dir, Ok(CgroupSetting::Dir("/sys/fs/cgroup/GW".into())));
        let err = "relative/dir".parse::<CgroupSetting>().unwrap_err();
        assert!(err.to_string().starts_with("RUN_CGROUP must be auto, off"));
    }

    #[test]
    fn uid_range_parses_inclusive_ends() {
        let range: RunUidRange = "61000-61999".parse().unwrap();
        assert_eq!(
            (range.first(), range.count(), range.last()),
            (61000, 1000, 61999)
        );
        assert_eq!(range.to_string(), "61000-61999");
        assert_eq!(range, RunUidRange::default());
        let single: RunUidRange = "70000".parse().unwrap();
        assert_eq!((single.first(), single.count()), (70000, 1));
        assert!(range.contains(61999) && !range.contains(62000));
        assert_eq!(range.nth_wrapping(1001), 61001);
    }

    #[test]
    fn uid_range_refuses_root_system_uids_and_nonsense() {
        for bad in [
            "0-100",
            "999-2000",
            "5-3",
            "a-b",
            "",
            "4294967290-4294967295",
        ] {
            assert!(bad.parse::<RunUidRange>().is_err(), "{bad:?} accepted");
        }
        assert!(RunUidRange::new(61000, 0).is_err());
    }

    #[test]
    fn instance_key_is_stable_and_short() {
        let key = instance_key_for(Path::new("/nonexistent/jobs"));
        assert_eq!(key.len(), 16);
        assert_eq!(key, instance_key_for(Path::new("/nonexistent/jobs")));
        assert_ne!(key, instance_key_for(Path::new("/nonexistent/other")));
    }
}
