//! The OpenAI-compatible surface: wire types, prompt rendering, errors, streaming chunks.

pub mod error;
pub mod finish_reason;
pub mod prompt;
pub mod stream;
pub mod wire;

/// A fresh `chatcmpl-…` id.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}
