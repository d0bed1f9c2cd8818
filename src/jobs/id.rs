//! Job ids: unguessable, so knowing one id tells a caller nothing about any other.

/// Length of a job id: a UUID v4 in simple (hex, no dashes) form.
pub const JOB_ID_LEN: usize = 32;

/// A fresh job id: 122 random bits as 32 lowercase hex characters.
///
/// The replaced service used 12 hex characters of a UUID, few enough to guess; the full UUID is
/// what makes an id safe to hand to whoever asks about the job.
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` has the shape of a job id, so a path segment that cannot name a job is answered
/// without asking the store.
pub fn is_job_id(id: &str) -> bool {
    id.len() == JOB_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_characters_and_differ() {
        let a = new_job_id();
        let b = new_job_id();
        assert!(is_job_id(&a), "{a}");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn other_shapes_are_not_ids() {
        for id in ["", "abc", "../etc/passwd", &"g".repeat(32), &"a".repeat(33)] {
            assert!(!is_job_id(id), "{id}");
        }
    }
}
