//! The routes, one file per resource, and the error body of the job routes.

pub(crate) mod chat;
pub(crate) mod detail;
pub(crate) mod health;
pub(crate) mod intake;
pub(crate) mod jobs;
pub(crate) mod large;
pub(crate) mod messages;
pub(crate) mod metrics;
pub(crate) mod models;
pub(crate) mod openapi;
pub(crate) mod quota;
pub(crate) mod responses;
pub(crate) mod session;
