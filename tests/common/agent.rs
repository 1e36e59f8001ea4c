//! A `pgward agent` process for the end-to-end tests: started as the postgres user, its log
//! collected while it runs, its endpoints read over loopback, signalled and waited for by PID.

#![allow(dead_code)]

use super::pg::{as_postgres, reachable_binary};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// `pgward --config cfg agent`, with `env` added to its environment.
    pub fn start(cfg: &Path, cwd: &Path, port: u16, env: &[(&str, String)]) -> Agent {
        let mut cmd = Command::new(reachable_binary());
        cmd.args(["--config", cfg.to_str().unwrap(), "agent"])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        as_postgres(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start the agent");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent { child, port, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `GET path`: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.port, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|x| x.1).unwrap_or_default()
    }

    /// The value of `series` (name with labels, exactly as exposed) right now.
    pub fn value(&self, series: &str) -> Option<f64> {
        value(&self.metrics(), series)
    }

    /// Waits until `cond` holds, failing the test (with the metrics and the log) after
    /// `limit` or when the agent exits.
    pub fn wait_for(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&Agent) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status}) while waiting for {what}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let m = self.metrics();
                let _ = self.child.kill();
                panic!("{what}: not within {limit:?}\n{m}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for the agent to exit, at most `limit` (then kills it and fails).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the log thread read the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the agent did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on 127.0.0.1:port: (status, body).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// The value of the series `series` (name with labels, exactly as exposed) in `metrics`.
pub fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// `{job="<kind>",kind="<kind>"}`: the labels of a job named after its kind.
pub fn job(kind: &str) -> String {
    format!("{{job=\"{kind}\",kind=\"{kind}\"}}")
}

/// systemd's side of `NOTIFY_SOCKET`: a datagram socket the agent (as postgres) may write to,
/// collecting every message.
pub struct NotifySocket {
    pub path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        use std::os::unix::fs::PermissionsExt;
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with the test process; reading an unbound-later socket is harmless.
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        NotifySocket {
            path: path.to_path_buf(),
            messages,
        }
    }

    /// How many messages held `line` as one of their lines.
    pub fn count(&self, line: &str) -> usize {
        let m = self.messages.lock().unwrap();
        m.iter()
            .filter(|msg| msg.lines().any(|l| l == line))
            .count()
    }

    pub fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
