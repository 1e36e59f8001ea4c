//! Turns a manifest into what is on disk before the blocks arrive: directories, tablespace
//! links, and every file created at its final length.
//!
//! [`Layout::of`] is pure: it resolves and checks every manifest path first, so a bad
//! manifest is refused before anything is touched. [`prepare`] then does the IO, and
//! [`create_files`] creates the files in parallel. In delta mode what the backup does not have
//! is removed and matching files stay in place (resized to the manifest's length), so that
//! `write.rs` can skip blocks already right.
//!
//! `global/pg_control` is held back: it is written after everything else is durable, so a
//! restore that is interrupted leaves a directory PostgreSQL refuses to start.

use crate::repo::manifest::{FileKind, Manifest};
use crate::restore::delta::{self, Expect, Marker};
use crate::restore::dest::{self, Destination, Resolved};
use crate::restore::files::{Creator, FileJob, create_file};
use crate::restore::write::WritePlan;
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where everything of one manifest goes, checked, before any IO.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Directories with their final modes (the data directory and tablespace locations
    /// included), parents before children.
    pub dirs: Vec<(PathBuf, u32)>,
    /// `pg_tblspc/<oid>` → location.
    pub links: Vec<(PathBuf, PathBuf)>,
    /// Files with the index of their entry in the manifest.
    pub files: Vec<(FileJob, usize)>,
    /// `global/pg_control`, written last.
    pub control: (FileJob, usize),
}

impl Layout {
    pub fn of(dest: &Destination, m: &Manifest) -> Result<Layout> {
        let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
        let mut files = Vec::new();
        let mut control = None;
        dirs.insert(dest.pgdata.clone(), 0o700);
        for loc in dest.tablespaces.values() {
            dirs.insert(loc.clone(), 0o700);
        }
        for d in dest::required_dirs() {
            dirs.insert(dest.pgdata.join(d), 0o700);
        }
        for (i, e) in m.files.iter().enumerate() {
            if dest::skipped(&e.path) {
                tracing::debug!(path = %e.path, "not restored from the manifest: restore writes its own");
                continue;
            }
            if e.kind == FileKind::Dir && (e.path.is_empty() || e.path == ".") {
                dirs.insert(dest.pgdata.clone(), e.mode & 0o7777);
                continue;
            }
            match (dest.resolve(&e.path)?, e.kind) {
                (Resolved::Path(p), FileKind::Dir) => {
                    dirs.insert(p, e.mode & 0o7777);
                }
                (Resolved::TablespaceLink { location, .. }, FileKind::Dir) => {
                    // The entry's mode is the tablespace directory's.
                    dirs.insert(location, e.mode & 0o7777);
                }
                (Resolved::Path(path), FileKind::File) => {
                    let job = FileJob {
                        rel: e.path.clone(),
                        path,
                        size: e.size,
                        mode: e.mode,
                        mtime: e.mtime,
                    };
                    if e.path == dest::PG_CONTROL {
                        control = Some((job, i));
                    } else {
                        files.push((job, i));
                    }
                }
                (Resolved::TablespaceLink { .. }, FileKind::File) => bail!(
                    "the manifest lists {} as a file, but it is a tablespace link (the manifest \
                     is inconsistent)",
                    e.path
                ),
            }
        }
        let Some(control) = control else {
            bail!(
                "backup {} has no global/pg_control: it cannot be restored (the manifest is \
                 incomplete)",
                m.label
            );
        };
        // Files whose directory the manifest does not list still get one.
        for (job, _) in files.iter().chain(std::iter::once(&control)) {
            for a in job.path.ancestors().skip(1) {
                if dest.roots().contains(&a) || dirs.contains_key(a) {
                    break;
                }
                dirs.insert(a.to_path_buf(), 0o700);
            }
        }
        let mut dirs: Vec<(PathBuf, u32)> = dirs.into_iter().collect();
        dirs.sort_by_key(|(p, _)| p.components().count());
        let links = dest
            .tablespaces
            .iter()
            .map(|(oid, loc)| (dest.pgdata.join(format!("pg_tblspc/{oid}")), loc.clone()))
            .collect();
        Ok(Layout {
            dirs,
            links,
            files,
            control,
        })
    }

    /// Everything that may exist after the restore, for delta cleaning.
    fn expected(&self, dest: &Destination) -> HashMap<PathBuf, Expect> {
        let mut e: HashMap<PathBuf, Expect> = HashMap::new();
        for (d, _) in &self.dirs {
            e.insert(d.clone(), Expect::Dir);
        }
        for (link, to) in &self.links {
            e.insert(link.clone(), Expect::Link(to.clone()));
        }
        for (job, _) in self.files.iter().chain(std::iter::once(&self.control)) {
            e.insert(job.path.clone(), Expect::File);
        }
        // Restore writes these itself (or removes tablespace_map when there are none); they
        // are replaced, not counted as removed.
        for own in [
            dest::MARKER,
            dest::BACKUP_LABEL,
            dest::RECOVERY_SIGNAL,
            dest::TABLESPACE_MAP,
        ] {
            e.insert(dest.pgdata.join(own), Expect::File);
        }
        e
    }
}

/// What [`prepare`] leaves for the writers and the final steps.
#[derive(Debug)]
pub struct Prepared {
    pub plan: WritePlan,
    /// Directories (with final modes) to chmod, chown and fsync at the end.
    pub dirs: Vec<(PathBuf, u32)>,
    /// Directories above the data directory or a tablespace location that restore created.
    pub created_parents: Vec<PathBuf>,
    /// Delta: entries removed because the backup does not have them.
    pub removed: u64,
}

/// Creates the directory tree, writes the marker, and in delta mode removes what does not
/// belong; the files themselves are created by [`create_files`]. Blocking IO.
pub fn prepare(
    dest: &Destination,
    m: &Manifest,
    layout: &Layout,
    delta: bool,
    marker: &Marker,
    owner: Option<(u32, u32)>,
) -> Result<Prepared> {
    let mut created_parents = Vec::new();
    for root in dest.roots() {
        for p in create_parents(root)? {
            chown(&p, owner)?;
            created_parents.push(p);
        }
        if !root.exists() {
            fs::create_dir(root).with_context(|| format!("cannot create {}", root.display()))?;
        }
        chown(root, owner)?;
        // Writable by us until the end, whatever the final mode.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", root.display()))?;
    }
    let marker_path = dest.pgdata.join(dest::MARKER);
    crate::fsutil::write_atomic(&marker_path, &serde_json::to_vec_pretty(marker)?)
        .context("cannot write the restore marker")?;
    fs::set_permissions(&marker_path, fs::Permissions::from_mode(0o600))?;
    chown(&marker_path, owner)?;

    let mut removed = 0;
    if delta {
        // From here on the directory cannot be started until the restore finishes.
        match fs::remove_file(&layout.control.0.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", layout.control.0.path.display()));
            }
        }
        let expected = layout.expected(dest);
        for root in dest.roots() {
            removed += delta::clean(root, &expected)?;
        }
    }

    for (d, _) in &layout.dirs {
        match fs::symlink_metadata(d) {
            Ok(meta) if meta.is_dir() || (meta.is_symlink() && d.is_dir()) => {}
            Ok(_) => bail!("{} exists and is not a directory", d.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(d)
                    .with_context(|| format!("cannot create directory {}", d.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", d.display())),
        }
        chown(d, owner)?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", d.display()))?;
    }
    for (link, to) in &layout.links {
        if fs::read_link(link).is_ok_and(|t| t == *to) {
            continue;
        }
        if fs::symlink_metadata(link).is_ok() {
            bail!("{} is in the way of the tablespace link", link.display());
        }
        std::os::unix::fs::symlink(to, link).with_context(|| {
            format!(
                "cannot create tablespace link {} -> {}",
                link.display(),
                to.display()
            )
        })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(link, Some(uid), Some(gid))
                .with_context(|| format!("cannot change the owner of {}", link.display()))?;
        }
    }

    let mut plan = WritePlan::new(m.block_size);
    // In a full restore, a file written by a single worker is created by that worker (see
    // create_files).
    plan.creator = (!delta).then_some(Creator { owner });
    let mut index = HashMap::new();
    for (job, i) in &layout.files {
        plan.add(job.clone(), &m.files[*i].blocks, &mut index)?;
    }
    Ok(Prepared {
        plan,
        dirs: layout.dirs.clone(),
        created_parents,
        removed,
    })
}

/// Creates the files of `plan` that must exist before the writers start (see
/// [`create_file`]), on `threads` threads: creating a file costs a few hundred microseconds on
/// a virtual disk, which adds up over thousands of files. When the plan has a creator (a
/// full restore), only files written in several chunks at once are created here, preallocated;
/// each other file is created by the worker that writes it, overlapping the creation of
/// thousands of small files with the CPU work of the large ones.
pub async fn create_files(
    plan: &WritePlan,
    delta: bool,
    owner: Option<(u32, u32)>,
    threads: usize,
) -> Result<()> {
    let chunk = plan.chunk_bytes;
    let files: Vec<FileJob> = match plan.creator {
        Some(_) => plan
            .files
            .iter()
            .filter(|j| j.size > chunk)
            .cloned()
            .collect(),
        None => plan.files.clone(),
    };
    crate::restore::write::parallel(files, threads, move |job| {
        create_file(job, delta, owner, job.size > chunk)
    })
    .await
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot change the owner of {}", path.display())),
        None => Ok(()),
    }
}

/// Creates the missing ancestors of `dir` (not `dir` itself); returns them, outermost first.
fn create_parents(dir: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    for a in missing.iter().rev() {
        fs::create_dir(a).with_context(|| format!("cannot create directory {}", a.display()))?;
    }
    Ok(missing.into_iter().rev().collect())
}

/// Every directory whose entries changed: each restored directory and the parents of the
/// roots and of created parents.
pub fn dirs_to_sync(p: &Prepared) -> Vec<PathBuf> {
    let mut set: BTreeSet<PathBuf> = p.dirs.iter().map(|(d, _)| d.clone()).collect();
    for d in p.dirs.iter().map(|(d, _)| d).chain(&p.created_parents) {
        if let Some(parent) = d.parent() {
            set.insert(parent.to_path_buf());
        }
    }
    set.extend(p.created_parents.iter().cloned());
    set.into_iter().collect()
}
