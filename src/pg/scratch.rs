//! One throwaway or scratch PostgreSQL server: the demo's clusters, a drill's restored copy,
//! the tests' clusters.
//!
//! A [`ScratchSpec`] says which programs, which data directory, which socket and port, which
//! settings and who runs the server. [`ScratchSpec::initdb`] makes a new data directory,
//! [`ScratchSpec::adopt`] takes over an existing one (a restored backup); both write the
//! spec's settings into `postgresql.auto.conf` (read last, so they beat whatever the directory
//! inherited: a restored copy must not listen on the source's port or archive into the
//! source's repository). [`ScratchCluster::start`] returns a [`Running`] guard.
//!
//! The invariant: a server this module started does not outlive its guard. Dropping a
//! [`Running`] (also while unwinding from a panic) stops the server — the spec's first
//! shutdown mode, then immediate, then SIGKILL to the postmaster it started (by PID and
//! process start time, see [`postmaster`]) — and a start that fails stops whatever it started
//! before returning the error. The server listens on its Unix socket only.
//!
//! A drill's copy lives in a [`ScratchDir`] ([`dir`]): data, socket, tablespaces and log under
//! one root with a marker naming its owner process and postmaster; dropping it stops whatever
//! still runs there and removes it, and [`dir::reap`] removes what a killed owner left.
//!
//! SQL runs through `psql` from the same binaries, not a tokio-postgres connection: the guard
//! and the tests are synchronous and may run inside or outside a tokio runtime, a `psql` under a
//! deadline cannot hang its caller, and there is no connection to re-establish across a
//! promotion or a restart. Async callers that want typed values connect with
//! [`ScratchCluster::conn_config`].

pub mod cluster;
pub mod dir;
pub mod postmaster;
mod running;
pub mod server_log;
mod spec;

pub use cluster::ScratchCluster;
pub use dir::ScratchDir;
pub use running::Running;
pub use spec::{Initdb, ScratchSpec};

use anyhow::{Context, Result};
use std::time::Duration;

/// Unix socket paths are limited to 107 bytes (`sun_path`).
const MAX_SOCKET_PATH: usize = 107;
/// Deadline for `initdb`, `psql` and `pg_ctl promote`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time a `pg_ctl` gets beyond its own `-t` before it is killed.
const PG_CTL_SLACK: Duration = Duration::from_secs(30);
/// How long a postmaster may take to exit once `pg_ctl stop` says it has, or after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often recovery is polled.
const POLL: Duration = Duration::from_millis(100);

/// `pg_ctl stop -m <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Sessions are disconnected and a shutdown checkpoint is written.
    Fast,
    /// No checkpoint: the next start runs crash recovery.
    Immediate,
}

impl Shutdown {
    fn as_str(self) -> &'static str {
        match self {
            Shutdown::Fast => "fast",
            Shutdown::Immediate => "immediate",
        }
    }
}

/// What happens to the data directory when the last handle on the cluster goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUse {
    KeepDataDir,
    /// Removed once the server is stopped (never while a postmaster still runs in it).
    RemoveDataDir,
}

/// A TCP port nobody listens on right now. Scratch servers listen on their Unix socket only, so
/// the port only names the socket file.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("cannot find a free port")
}
