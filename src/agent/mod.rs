//! `pgward agent`: the long-running process that runs a policy's jobs on their schedules.
//!
//! [`schedule`] evaluates crontab(5) expressions in the policy's time zone (pure, `now` passed
//! in); [`state`] is the per-job record of last runs in `[agent] state_dir`, which survives
//! restarts so a run missed while the agent was down can be caught up once.

pub mod http;
pub mod jobs;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod state;
pub mod systemd;
