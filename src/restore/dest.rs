//! Where a restore writes: the data directory, tablespace locations, and who owns them.
//!
//! Owns the mapping from manifest paths (relative, `/`-separated, tablespace files under
//! `pg_tblspc/<oid>/…`) to paths on disk, and the checks made before anything is written. The
//! invariant: a manifest path can never resolve outside the data directory or a tablespace
//! location (no `..`, no absolute paths), whatever the manifest says.

use crate::pg::postmaster_pid::PostmasterPid;
use crate::repo::manifest::{Manifest, TablespaceEntry};
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Directories that must exist for PostgreSQL to start although a base backup may not list
/// them: those whose contents are left out (as `pg_basebackup` does), and `pg_tblspc`, which
/// holds the tablespace links. They are created with mode 0700 whatever the manifest says.
///
/// Derived from the backup's exclusion list, so the two can never drift apart.
pub fn required_dirs() -> impl Iterator<Item = &'static str> {
    crate::backup::exclude::EXCLUDE_DIR_CONTENTS
        .iter()
        .copied()
        .chain(["pg_wal/archive_status", "pg_tblspc"])
}

/// Files restore writes itself, never from the manifest.
pub const BACKUP_LABEL: &str = "backup_label";
pub const TABLESPACE_MAP: &str = "tablespace_map";
pub const RECOVERY_SIGNAL: &str = "recovery.signal";
pub const AUTO_CONF: &str = "postgresql.auto.conf";
pub const PG_CONTROL: &str = "global/pg_control";
/// Present while a restore runs: an interrupted restore can be resumed with `--delta`, and
/// without `global/pg_control` (written last) PostgreSQL refuses to start on the half-written
/// directory.
pub const MARKER: &str = ".pgward-restore-in-progress";

/// Manifest entries restore skips: written by restore itself, or meaningless in a copy
/// (`standby.signal` would turn the restore into a standby that ignores recovery targets).
pub fn skipped(path: &str) -> bool {
    matches!(
        path,
        BACKUP_LABEL
            | TABLESPACE_MAP
            | RECOVERY_SIGNAL
            | "standby.signal"
            | "postmaster.pid"
            | "postmaster.opts"
            | MARKER
    )
}

/// Where one manifest path lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An ordinary path on disk.
    Path(PathBuf),
    /// `pg_tblspc/<oid>` itself: a symlink to the tablespace location.
    TablespaceLink {
        oid: u32,
        link: PathBuf,
        location: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub pgdata: PathBuf,
    /// Tablespace OID → location on this host (mapped or original).
    pub tablespaces: BTreeMap<u32, PathBuf>,
}

impl Destination {
    /// Resolves the tablespace locations: `--tablespace-map` entries, else the original ones.
    pub fn new(
        pgdata: &Path,
        manifest: &Manifest,
        map: &BTreeMap<u32, PathBuf>,
    ) -> Result<Destination> {
        let pgdata = std::path::absolute(pgdata)
            .with_context(|| format!("cannot resolve {}", pgdata.display()))?;
        for oid in map.keys() {
            if !manifest.tablespaces.iter().any(|t| t.oid == *oid) {
                bail!(
                    "--tablespace-map names OID {oid}, but backup {} has no such tablespace\n\
                     hint: its tablespaces are: {}",
                    manifest.label,
                    describe_tablespaces(manifest)
                );
            }
        }
        for t in manifest
            .tablespaces
            .iter()
            .filter(|t| t.created_during_backup)
        {
            if let Some(to) = map.get(&t.oid).filter(|to| **to != Path::new(&t.location)) {
                bail!(
                    "tablespace {} cannot be restored to {}: it was created while backup {} \
                     was being copied, so recovery replays its CREATE TABLESPACE, which links \
                     pg_tblspc/{} back to {} whatever --tablespace-map says and then writes the \
                     tablespace there (on the source's host, into the source's own tablespace)\n\
                     hint: leave out --tablespace-map {}=… and restore on a host where {} is \
                     free, or take a new backup (`pgward backup`) and restore that one, which \
                     maps this tablespace like any other",
                    t.describe(),
                    to.display(),
                    manifest.label,
                    t.oid,
                    t.location,
                    t.oid,
                    t.location
                );
            }
        }
        let mut tablespaces = BTreeMap::new();
        for t in &manifest.tablespaces {
            let location = map
                .get(&t.oid)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&t.location));
            if !location.is_absolute() {
                bail!(
                    "tablespace {} would be restored to `{}`, which is not an absolute path\n\
                     hint: give an absolute location with --tablespace-map {}=/path",
                    t.oid,
                    location.display(),
                    t.oid
                );
            }
            if location.to_string_lossy().contains(['\n', '\r']) {
                bail!(
                    "tablespace location `{}` contains a line break",
                    location.display()
                );
            }
            if location.starts_with(&pgdata) || pgdata.starts_with(&location) {
                bail!(
                    "tablespace {} location {} overlaps the data directory {}\n\
                     hint: map it elsewhere with --tablespace-map {}=/path",
                    t.oid,
                    location.display(),
                    pgdata.display(),
                    t.oid
                );
            }
            if let Some((other, _)) = tablespaces.iter().find(|(_, l)| **l == location) {
                bail!(
                    "tablespaces {other} and {} would both be restored to {}\nhint: map one \
                     of them elsewhere with --tablespace-map",
                    t.oid,
                    location.display()
                );
            }
            tablespaces.insert(t.oid, location);
        }
        Ok(Destination {
            pgdata,
            tablespaces,
        })
    }

    /// Where `rel` (a manifest path) lands; refuses paths that would escape.
    pub fn resolve(&self, rel: &str) -> Result<Resolved> {
        let mut parts = Vec::new();
        for c in Path::new(rel).components() {
            match c {
                Component::Normal(p) => parts.push(p),
                _ => bail!(
                    "the manifest names `{}`, which is not a plain relative path; refusing to \
                     write outside the data directory",
                    rel.escape_debug()
                ),
            }
        }
        if parts.is_empty() || rel.contains("//") {
            bail!(
                "the manifest names an empty or malformed path `{}`",
                rel.escape_debug()
            );
        }
        // A link in pg_tblspc leads to a tablespace location; a plain directory there (an
        // in-place tablespace) is part of the data directory like any other.
        let oid: Option<u32> = match parts.as_slice() {
            [first, oid, ..] if *first == "pg_tblspc" => oid.to_str().and_then(|s| s.parse().ok()),
            _ => None,
        };
        if let Some((oid, location)) = oid.and_then(|o| self.tablespaces.get(&o).map(|l| (o, l))) {
            if parts.len() == 2 {
                return Ok(Resolved::TablespaceLink {
                    oid,
                    link: self.pgdata.join(rel),
                    location: location.clone(),
                });
            }
            let mut p = location.clone();
            p.extend(&parts[2..]);
            return Ok(Resolved::Path(p));
        }
        Ok(Resolved::Path(self.pgdata.join(rel)))
    }

    /// The data directory and every tablespace location.
    pub fn roots(&self) -> Vec<&Path> {
        std::iter::once(self.pgdata.as_path())
            .chain(self.tablespaces.values().map(PathBuf::as_path))
            .collect()
    }

    /// The `tablespace_map` PostgreSQL reads at the end of recovery to recreate the links:
    /// `<oid> <location>` per line, with the mapped locations.
    pub fn tablespace_map(&self) -> Option<String> {
        if self.tablespaces.is_empty() {
            return None;
        }
        Some(
            self.tablespaces
                .iter()
                .map(|(oid, loc)| format!("{oid} {}\n", loc.display()))
                .collect(),
        )
    }
}

/// Refuses tablespace locations that the source cluster on this host (`source`, its data
/// directory) links to from its own `pg_tblspc`, delta or not: a tablespace restored without
/// `--tablespace-map` next to its source would otherwise be written into (and with `--delta`
/// cleaned out of) the production one. A restore into the source's own data directory is left
/// to the other checks (no running server; `--delta` over the same cluster).
pub fn check_not_source_tablespaces(dest: &Destination, m: &Manifest, source: &Path) -> Result<()> {
    let Ok(source) = source.canonicalize() else {
        return Ok(()); // no such cluster on this host
    };
    if dest.pgdata.canonicalize().is_ok_and(|d| d == source) {
        return Ok(());
    }
    let Ok(links) = crate::backup::walk::tablespaces(&source) else {
        return Ok(());
    };
    for (oid, loc) in &dest.tablespaces {
        let Ok(loc_c) = loc.canonicalize() else {
            continue; // absent: nobody's tablespace yet
        };
        let Some(used) = (links.iter()).find(|l| {
            Path::new(&l.location)
                .canonicalize()
                .is_ok_and(|l| l == loc_c)
        }) else {
            continue;
        };
        let link = source.join(format!("pg_tblspc/{}", used.oid));
        let entry = m.tablespaces.iter().find(|t| t.oid == *oid);
        if let Some(t) = entry.filter(|t| t.created_during_backup) {
            bail!(
                "tablespace {} cannot be restored on this host: its location is the source \
                 cluster's own tablespace ({} links there), and it was created while backup {} \
                 was being copied, so recovery replays its CREATE TABLESPACE there whatever \
                 --tablespace-map says\n\
                 hint: restore this backup on a host where {} is free, or take a new backup \
                 (`pgward backup`) and restore that one",
                t.describe(),
                link.display(),
                m.label,
                t.location
            );
        }
        bail!(
            "tablespace {oid} would be restored to {}, which is the source cluster's own \
             tablespace ({} links there)\n\
             hint: map it elsewhere with --tablespace-map {oid}=/new/location",
            loc.display(),
            link.display()
        );
    }
    Ok(())
}

fn describe_tablespaces(m: &Manifest) -> String {
    if m.tablespaces.is_empty() {
        return "none".into();
    }
    m.tablespaces
        .iter()
        .map(TablespaceEntry::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `OID=DIR`.
pub fn parse_tablespace_mapping(s: &str) -> Result<(u32, PathBuf)> {
    let Some((oid, dir)) = s.split_once('=') else {
        bail!(
            "`{s}` is not a tablespace mapping\nhint: write OID=/new/location, e.g. 16385=/srv/ts1"
        );
    };
    let oid: u32 = oid.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "`{s}`: `{oid}` is not a tablespace OID\nhint: the OIDs are in the plan \
             (--dry-run) and in pg_tablespace"
        )
    })?;
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        bail!("`{s}`: the location must be an absolute path");
    }
    Ok((oid, dir))
}

/// Why a restore believes a server runs on a data directory (see [`server_sign`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSign {
    /// The pid on line 1 of `postmaster.pid` is a live process in this PID namespace.
    Process(u32),
    /// Something accepts connections where `postmaster.pid` says the server listens
    /// (`socket /run/x/.s.PGSQL.5432`, `TCP 127.0.0.1:5432`).
    Answers(String),
    /// The file, or the socket it names, exists but cannot be read or tried: as likely a
    /// running server's as not.
    CannotTell(String),
}

impl ServerSign {
    /// The refusal's first line, for `pgdata` and its `postmaster.pid`.
    pub fn describe(&self, pgdata: &Path) -> String {
        let pid_file = pgdata.join("postmaster.pid");
        let (pgdata, pid_file) = (pgdata.display(), pid_file.display());
        match self {
            ServerSign::Process(pid) => format!(
                "a PostgreSQL server is running on {pgdata}: {pid_file} names process {pid}, \
                 which is alive"
            ),
            ServerSign::Answers(endpoint) => format!(
                "a PostgreSQL server is running on {pgdata}: {pid_file} names {endpoint}, and \
                 something answers there"
            ),
            ServerSign::CannotTell(what) => format!(
                "a PostgreSQL server may be running on {pgdata}: {pid_file} exists, and {what}"
            ),
        }
    }
}

/// How long a TCP probe of a listen address may take; an address that does not answer within
/// it (dropped by a firewall, say) is taken as nothing listening.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a server may be running on `pgdata`, going by its `postmaster.pid`: `None` when
/// there is no such file, or when nothing it names is alive (a stale file from a crash).
///
/// `/proc` alone cannot tell: a postmaster in another PID namespace (a container with the data
/// directory bind-mounted) is invisible there. So the Unix socket and the TCP address the file
/// names are tried as well, and anything that accepts a connection there counts, as does a
/// socket that exists but cannot be tried. A false alarm (another server on the same port) is
/// what `restore --force` is for; a missed server would have its files rewritten under it.
pub fn server_sign(pgdata: &Path) -> Option<ServerSign> {
    let text = match fs::read_to_string(pgdata.join("postmaster.pid")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(ServerSign::CannotTell(format!("it cannot be read ({e})"))),
    };
    let lock = PostmasterPid::parse(&text);
    if let Some(pid) = lock.pid
        && Path::new(&format!("/proc/{pid}")).exists()
    {
        return Some(ServerSign::Process(pid));
    }
    if let Some(socket) = lock.socket_path(pgdata) {
        match UnixStream::connect(&socket) {
            Ok(_) => return Some(ServerSign::Answers(format!("socket {}", socket.display()))),
            // No socket, or one left behind by a server that is gone.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                return Some(ServerSign::CannotTell(format!(
                    "its socket {} cannot be tried ({e})",
                    socket.display()
                )));
            }
        }
    }
    for (host, port) in lock.tcp_targets() {
        let Ok(addrs) = (host.as_str(), port).to_socket_addrs() else {
            continue;
        };
        for addr in addrs {
            if TcpStream::connect_timeout(&addr, TCP_PROBE_TIMEOUT).is_ok() {
                return Some(ServerSign::Answers(format!("TCP {addr}")));
            }
        }
    }
    None
}

/// Whether `dir` is absent or an empty directory. Anything else but a directory is an error.
pub fn is_empty_or_absent(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read directory {}", dir.display())),
    }
}

/// Whether this process runs as root ([`crate::pg::binaries::is_root`]; not root when that
/// cannot be told).
pub fn running_as_root() -> bool {
    crate::pg::binaries::is_root().unwrap_or(false)
}

/// Who should own what a root-run restore creates: the owner of `dir` if it exists, else of
/// its nearest existing ancestor. Restores are normally run as postgres; an operator running
/// one as root into a postgres-owned directory must not leave root-owned files that
/// PostgreSQL cannot open. `None` when no change of owner is needed.
pub fn owner_for(dir: &Path) -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let m = dir.ancestors().find_map(|a| fs::metadata(a).ok())?;
    (m.uid() != 0 || m.gid() != 0).then_some((m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tablespaces: &[(u32, &str)]) -> Manifest {
        let text = r#"{"format_version":1,"label":"L","system_identifier":"1","pg_major":15,
            "block_size":1048576,"timeline":1,"start_lsn":"0/2000028","stop_lsn":"0/2000100",
            "start_wal":"000000010000000000000002","stop_wal":"000000010000000000000002",
            "start_time":"2026-11-22T01:30:00Z","stop_time":"2026-11-22T01:30:05Z",
            "backup_label":"","tablespace_map":null,"data_checksums":false,"tablespaces":[],
            "files":[],"bad_pages":[],"stats":{"total_bytes":0,"files":0,"blocks":0,
            "new_blocks":0,"new_bytes":0,"stored_bytes":0,"duration_ms":0}}"#;
        let mut m: Manifest = serde_json::from_str(text).unwrap();
        m.tablespaces = tablespaces
            .iter()
            .map(|(oid, l)| TablespaceEntry {
                oid: *oid,
                location: l.to_string(),
                ..Default::default()
            })
            .collect();
        m
    }

    #[test]
    fn resolves_paths_and_tablespaces() {
        let m = manifest(&[(16385, "/srv/ts1"), (16386, "/srv/ts2")]);
        let map = BTreeMap::from([(16386, PathBuf::from("/mnt/new2"))]);
        let d = Destination::new(Path::new("/data/pg"), &m, &map).unwrap();
        assert_eq!(
            d.resolve("base/1/1259").unwrap(),
            Resolved::Path("/data/pg/base/1/1259".into())
        );
        assert_eq!(
            d.resolve("pg_tblspc/16385/PG_15_202209061/5/16390")
                .unwrap(),
            Resolved::Path("/srv/ts1/PG_15_202209061/5/16390".into())
        );
        assert_eq!(
            d.resolve("pg_tblspc/16386").unwrap(),
            Resolved::TablespaceLink {
                oid: 16386,
                link: "/data/pg/pg_tblspc/16386".into(),
                location: "/mnt/new2".into()
            }
        );
        assert_eq!(
            d.tablespace_map().unwrap(),
            "16385 /srv/ts1\n16386 /mnt/new2\n"
        );
        // An in-place tablespace is an ordinary directory.
        assert_eq!(
            d.resolve("pg_tblspc/999/x").unwrap(),
            Resolved::Path("/data/pg/pg_tblspc/999/x".into())
        );
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "base/../../x",
            "",
            "./x",
            "a//b",
        ] {
            assert!(d.resolve(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_mappings() {
        let m = manifest(&[(16385, "/srv/ts1"), (16386, "/srv/ts2")]);
        let cases: Vec<(BTreeMap<u32, PathBuf>, &str)> = vec![
            (
                BTreeMap::from([(1, PathBuf::from("/x"))]),
                "no such tablespace",
            ),
            (
                BTreeMap::from([(16385, PathBuf::from("/data/pg/ts"))]),
                "overlaps",
            ),
            (
                BTreeMap::from([(16385, PathBuf::from("/srv/ts2"))]),
                "both be restored",
            ),
        ];
        for (map, want) in cases {
            let msg = format!(
                "{:#}",
                Destination::new(Path::new("/data/pg"), &m, &map).unwrap_err()
            );
            assert!(msg.contains(want), "{msg}");
        }
        // A tablespace created during the copy can only go back where it was: recovery
        // replays its CREATE TABLESPACE there.
        let mut m = manifest(&[(16385, "/srv/ts1"), (16390, "/srv/new")]);
        m.tablespaces[1].created_during_backup = true;
        m.tablespaces[1].name = Some("ts_new".into());
        let map = BTreeMap::from([(16390, PathBuf::from("/mnt/elsewhere"))]);
        let msg = format!(
            "{:#}",
            Destination::new(Path::new("/data/pg"), &m, &map).unwrap_err()
        );
        assert!(
            msg.starts_with(
                "tablespace 16390 (ts_new, /srv/new) cannot be restored to /mnt/elsewhere: it was \
                 created while backup L was being copied"
            ) && msg.contains("\nhint: leave out --tablespace-map 16390=… and restore on a host"),
            "{msg}"
        );
        for map in [
            BTreeMap::new(),
            BTreeMap::from([(16390, PathBuf::from("/srv/new"))]),
            BTreeMap::from([(16385, PathBuf::from("/mnt/ts1"))]),
        ] {
            let d = Destination::new(Path::new("/data/pg"), &m, &map).unwrap();
            assert_eq!(d.tablespaces[&16390], PathBuf::from("/srv/new"));
        }
        assert_eq!(
            parse_tablespace_mapping("16385=/srv/x").unwrap(),
            (16385, PathBuf::from("/srv/x"))
        );
        for bad in ["16385", "x=/srv", "16385=rel/dir"] {
            assert!(parse_tablespace_mapping(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn postmaster_detection() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("postmaster.pid");
        assert_eq!(server_sign(dir.path()), None);
        fs::write(&pid_file, format!("{}\n/data\n", std::process::id())).unwrap();
        assert_eq!(
            server_sign(dir.path()),
            Some(ServerSign::Process(std::process::id()))
        );
        // A pid that cannot exist (above pid_max's hard limit of 2^22), nothing else named.
        fs::write(&pid_file, "99999999\n").unwrap();
        assert_eq!(server_sign(dir.path()), None);
        assert!(is_empty_or_absent(&dir.path().join("nope")).unwrap());
        assert!(!is_empty_or_absent(dir.path()).unwrap());
        assert!(is_empty_or_absent(&pid_file).is_err());
    }

    /// A postmaster in another PID namespace: its pid means nothing here, but its socket (in a
    /// directory shared with the container) or its TCP port answers.
    #[test]
    fn a_server_invisible_in_proc_is_found_by_its_socket_or_port() {
        let dir = tempfile::tempdir().unwrap();
        let sockdir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("postmaster.pid");
        let lock = |port: u16, listen: &str| {
            format!(
                "99999999\n/var/lib/postgresql/data\n1763800000\n{port}\n{}\n{listen}\n",
                sockdir.path().display()
            )
        };
        fs::write(&pid_file, lock(5432, "")).unwrap();
        let socket = sockdir.path().join(".s.PGSQL.5432");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            server_sign(dir.path()),
            Some(ServerSign::Answers(format!("socket {}", socket.display())))
        );
        // The socket file outlives its server: a refused connection is no sign.
        drop(listener);
        assert!(socket.exists());
        assert_eq!(server_sign(dir.path()), None);
        fs::remove_file(&socket).unwrap();
        assert_eq!(server_sign(dir.path()), None);

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        for listen in ["*", "127.0.0.1", "0.0.0.0"] {
            fs::write(&pid_file, lock(port, listen)).unwrap();
            assert_eq!(
                server_sign(dir.path()),
                Some(ServerSign::Answers(format!("TCP 127.0.0.1:{port}"))),
                "{listen}"
            );
        }
        drop(tcp);
        assert_eq!(server_sign(dir.path()), None);
    }
}
