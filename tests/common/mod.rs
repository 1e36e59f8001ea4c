//! Shared helpers for the integration tests.

pub mod pg;
pub mod s3_server;
