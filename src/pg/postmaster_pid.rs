//! `postmaster.pid`, the lock file a server keeps in its data directory while it runs.
//!
//! Lines as in PostgreSQL's `src/include/utils/pidfile.h` (`LOCK_FILE_LINE_*`): 1 the pid
//! (negated for a single-user backend), 2 the data directory, 3 the start time, 4 the port,
//! 5 the first Unix socket directory (empty when there is none), 6 the first listen address
//! (`*` for all; empty when TCP is off), 7 the shared memory key, 8 the status. The file is
//! written line by line as the server starts, so any line may be missing; a line that does
//! not parse is read as absent, never as an error.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostmasterPid {
    /// The server's pid, positive also for a single-user backend.
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    pub listen_addr: Option<String>,
}

impl PostmasterPid {
    pub fn parse(text: &str) -> PostmasterPid {
        let lines: Vec<&str> = text.lines().collect();
        let line = |n: usize| lines.get(n - 1).map(|l| l.trim()).filter(|l| !l.is_empty());
        PostmasterPid {
            pid: line(1)
                .and_then(|l| l.parse::<i64>().ok())
                .and_then(|p| u32::try_from(p.unsigned_abs()).ok())
                .filter(|&p| p > 0),
            port: line(4).and_then(|l| l.parse().ok()).filter(|&p| p > 0),
            socket_dir: line(5).map(PathBuf::from),
            listen_addr: line(6).map(str::to_string),
        }
    }

    /// `<socket_dir>/.s.PGSQL.<port>`. A relative directory is the server's, whose working
    /// directory is the data directory.
    pub fn socket_path(&self, pgdata: &Path) -> Option<PathBuf> {
        let dir = self.socket_dir.as_ref()?;
        Some(pgdata.join(dir).join(format!(".s.PGSQL.{}", self.port?)))
    }

    /// Where the server would accept TCP connections, as `(host, port)` to resolve: the listen
    /// address, with a wildcard tried on loopback (IPv4 and IPv6).
    pub fn tcp_targets(&self) -> Vec<(String, u16)> {
        let (Some(addr), Some(port)) = (self.listen_addr.as_deref(), self.port) else {
            return Vec::new();
        };
        let hosts: &[&str] = match addr {
            "*" => &["127.0.0.1", "::1"],
            "0.0.0.0" => &["127.0.0.1"],
            "::" => &["::1"],
            other => &[other],
        };
        hosts.iter().map(|h| (h.to_string(), port)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_running_server() {
        let p = PostmasterPid::parse(
            "4242\n/var/lib/postgresql/15/main\n1763800000\n5433\n/var/run/postgresql\n*\n  \
             5433001    196608\nready   \n",
        );
        assert_eq!(p.pid, Some(4242));
        assert_eq!(
            p.socket_path(Path::new("/data")),
            Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(
            p.tcp_targets(),
            vec![("127.0.0.1".to_string(), 5433), ("::1".to_string(), 5433)]
        );
    }

    #[test]
    fn partial_odd_and_single_user_files() {
        // Single-user backend: negated pid, no sockets.
        let p = PostmasterPid::parse("-4242\n/data\n1763800000\n");
        assert_eq!(p.pid, Some(4242));
        assert_eq!(p.socket_path(Path::new("/data")), None);
        assert!(p.tcp_targets().is_empty());
        // TCP off, a socket directory relative to the data directory.
        let p = PostmasterPid::parse("7\n/data\n0\n5432\n.\n\n");
        assert_eq!(
            p.socket_path(Path::new("/data")),
            Some(PathBuf::from("/data/./.s.PGSQL.5432"))
        );
        assert!(p.tcp_targets().is_empty());
        let p = PostmasterPid::parse("7\n/data\n0\n5432\n\n10.0.0.5\n");
        assert_eq!(p.socket_path(Path::new("/data")), None);
        assert_eq!(p.tcp_targets(), vec![("10.0.0.5".to_string(), 5432)]);
        for junk in ["", "\n", "x\n", "0\n", "99999999999\n"] {
            assert_eq!(
                PostmasterPid::parse(junk),
                PostmasterPid::default(),
                "{junk:?}"
            );
        }
    }
}
