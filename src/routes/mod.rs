//! The routes, one file per resource.

pub mod chat;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod seed_error;
pub mod telemetry;
