//! Shared helpers for the integration tests.

pub mod agent;
pub mod backup_scenarios;
pub mod drill;
pub mod pg;
pub mod receiver;
pub mod s3_server;
pub mod verify;
