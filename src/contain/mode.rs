//! Which isolation this process can give its runs, decided once at start-up.
//!
//! Per-run uids are the real fence: a run cannot read, signal or ptrace what another uid owns,
//! and "every process of this uid" is a set the kernel can kill atomically. They need the rights
//! to switch uids and to hand files over. Without them the gateway falls back to marking its runs'
//! processes, which contains cleanup but not access (see [`super::reap`]).

use std::fmt;
use std::path::PathBuf;

use super::settings::IsolationSetting;

/// How runs are contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Each run has its own uid from the configured range.
    Uid,
    /// Runs share the gateway's uid; their processes carry a marker variable.
    Process,
}

impl Mode {
    /// The stable lowercase name shown on `/health` and in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Uid => "uid",
            Self::Process => "process",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CAP_CHOWN` (`<linux/capability.h>`): handing the workspace to the run's uid.
const CAP_CHOWN: u32 = 0;
/// `CAP_SETGID`: switching a child to the run's gid and dropping its groups.
const CAP_SETGID: u32 = 6;
/// `CAP_SETUID`: switching a child to the run's uid.
const CAP_SETUID: u32 = 7;

/// What uid mode needs and why: switching to the run's uid and gid, and giving it its workspace.
const NEEDED: [(u32, &str); 3] = [
    (CAP_SETUID, "CAP_SETUID"),
    (CAP_SETGID, "CAP_SETGID"),
    (CAP_CHOWN, "CAP_CHOWN"),
];

/// Whether this process may switch uids, and if not, what it lacks (for the error line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Privilege {
    /// Every capability uid mode needs is effective.
    Sufficient,
    /// These capabilities are missing.
    Missing(Vec<&'static str>),
}

/// Reads the effective capabilities from `/proc/self/status`.
///
/// The capability set, not the euid, decides: root in a container with dropped capabilities has
/// euid 0 but cannot `setuid`, and a non-root binary with file capabilities can. Only when the
/// status file is unreadable (no /proc) does euid 0 stand in for the capabilities.
pub(crate) fn privilege() -> Privilege {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| cap_eff(&status));
    match effective {
        Some(bits) => privilege_from_bits(bits),
        None if nix::unistd::geteuid().is_root() => Privilege::Sufficient,
        None => Privilege::Missing(NEEDED.iter().map(|(_, name)| *name).collect()),
    }
}

/// The `CapEff:` line of a status file, as bits.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Which of the [`NEEDED`] capabilities `bits` lacks.
fn privilege_from_bits(bits: u64) -> Privilege {
    let missing: Vec<&'static str> = NEEDED
        .iter()
        .filter(|(cap, _)| bits & (1u64 << cap) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Privilege::Sufficient
    } else {
        Privilege::Missing(missing)
    }
}

/// Applies the operator's setting to what the process can do.
pub(crate) fn decide(
    setting: IsolationSetting,
    privilege: &Privilege,
) -> Result<Mode, Unavailable> {
    match (setting, privilege) {
        (IsolationSetting::Process, _) => Ok(Mode::Process),
        (_, Privilege::Sufficient) => Ok(Mode::Uid),
        (IsolationSetting::Auto, Privilege::Missing(_)) => Ok(Mode::Process),
        (IsolationSetting::Uid, Privilege::Missing(missing)) => Err(Unavailable::Unprivileged {
            euid: nix::unistd::geteuid().as_raw(),
            missing: missing.clone(),
        }),
    }
}

/// Why the gateway cannot contain runs the way it was asked to. Each variant displays as one line
/// that says what to change.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Unavailable {
    /// `ISOLATION=uid` without the rights to switch uids.
    Unprivileged {
        /// This process's effective uid.
        euid: u32,
        /// The capabilities it lacks.
        missing: Vec<&'static str>,
    },
    /// The uid lock directory cannot be made or is not safe to trust.
    LockDir {
        /// The configured directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `RUN_CGROUP` names a directory where run cgroups cannot be made.
    Cgroup {
        /// The configured directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The kernel lacks what process mode relies on (`pidfd_open`, Linux 5.3).
    Kernel {
        /// The missing facility and the operating system's answer.
        reason: String,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unprivileged { euid, missing } => write!(
                f,
                "ISOLATION=uid needs {} (run the gateway as root), but this process (euid {euid}) \
                 lacks them; set ISOLATION=auto or process to run without per-run uids",
                missing.join(", ")
            ),
            Self::LockDir { path, reason } => {
                write!(f, "run uid lock directory {}: {reason}", path.display())
            }
            Self::Cgroup { path, reason } => write!(
                f,
                "RUN_CGROUP={}: cannot make run cgroups there: {reason}; set RUN_CGROUP=auto or off",
                path.display()
            ),
            Self::Kernel { reason } => write!(f, "cannot contain runs on this kernel: {reason}"),
        }
    }
}

impl std::error::Error for Unavailable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_come_from_capeff_bits_6_7_and_0() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t00000000000000c1\n";
        assert_eq!(cap_eff(status), Some(0xc1));
        assert_eq!(privilege_from_bits(0xc1), Privilege::Sufficient);
        assert_eq!(
            privilege_from_bits(0x40),
            Privilege::Missing(vec!["CAP_SETUID", "CAP_CHOWN"])
        );
        assert_eq!(privilege_from_bits(0x1ff_feff_ffff), Privilege::Sufficient);
    }

    #[test]
    fn the_setting_meets_the_privilege() {
        let none = Privilege::Missing(vec!["CAP_SETUID"]);
        let all = Privilege::Sufficient;
        assert_eq!(decide(IsolationSetting::Auto, &all).unwrap(), Mode::Uid);
        assert_eq!(
            decide(IsolationSetting::Auto, &none).unwrap(),
            Mode::Process
        );
        assert_eq!(decide(IsolationSetting::Uid, &all).unwrap(), Mode::Uid);
        assert_eq!(
            decide(IsolationSetting::Process, &all).unwrap(),
            Mode::Process
        );
        let err = decide(IsolationSetting::Uid, &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ISOLATION=uid needs CAP_SETUID (run the gateway as root)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        assert_eq!(Mode::Uid.as_str(), "uid");
        assert_eq!(Mode::Process.to_string(), "process");
    }
}
