//! SQLite on a network file system. Clusters keep workspaces on NFS, Lustre
//! or GPFS, where SQLite's WAL mode cannot work across hosts (its index lives
//! in shared memory) and byte-range locks may be unreliable. Under such a
//! file system the store uses a rollback journal (no WAL, full syncs), and
//! `pipeline run` also takes the engine's own lock file, created atomically
//! (`O_EXCL`) and holding host and pid, beside the lock row.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The file systems the store treats as shared between hosts, by statfs magic.
const NETWORK: [(i64, &str); 9] = [
    (0x6969, "NFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x0000_517B, "SMB"),
    (0x1983_0326, "BeeGFS"),
    (0x00C3_6400, "CephFS"),
    (0x6573_5546, "FUSE"),
];

/// What kind of file system holds a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Local,
    Network(&'static str),
}

/// The kind of the file system whose statfs magic is `magic`.
pub fn classify(magic: i64) -> FsKind {
    NETWORK
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or(FsKind::Local, |(_, name)| FsKind::Network(name))
}

/// The statfs magic of the file system holding `path`.
pub fn statfs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a properly sized buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}

/// The kind of file system under `dir`. `PIPELINE_FS_MAGIC` (hex, e.g.
/// `0x6969`) stands in for statfs, so the network mode can be tested on any
/// machine.
pub fn kind_of(dir: &Path) -> FsKind {
    let forced = std::env::var("PIPELINE_FS_MAGIC").ok().and_then(|v| {
        i64::from_str_radix(
            v.trim().trim_start_matches("0x").trim_start_matches("0X"),
            16,
        )
        .ok()
    });
    forced
        .or_else(|| statfs_magic(dir))
        .map_or(FsKind::Local, classify)
}

/// The name of the engine's lock file in `.pipeline/`.
pub const LOCK_FILE: &str = "run.lock";

/// Takes the engine's lock file in `dir` for this process. A holder on this
/// host that is gone is replaced; a live one, or any holder on another host,
/// is refused.
pub fn take_lock_file(dir: &Path, command: &str) -> Result<()> {
    let path = dir.join(LOCK_FILE);
    let me = std::process::id();
    let host = pipeline_core::util::hostname();
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let start = pipeline_core::util::process_start(me).unwrap_or(0);
                writeln!(f, "{host} {me} {start} {command}")
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut it = text.split_whitespace();
                let (h, pid, start) = (it.next(), it.next(), it.next());
                let pid: Option<u32> = pid.and_then(|p| p.parse().ok());
                let start: Option<i64> = start.and_then(|s| s.parse().ok());
                match (h, pid) {
                    (Some(h), Some(p)) if h == host => {
                        if p != me && pipeline_core::util::process_alive(p, start) {
                            bail!(
                                "the workspace is locked by a running pid {p} ({}); wait for it \
                                 to finish or stop it",
                                path.display()
                            );
                        }
                        std::fs::remove_file(&path)
                            .with_context(|| format!("removing {}", path.display()))?;
                    }
                    (Some(h), _) => bail!(
                        "the workspace is locked by host {h} ({}: `{}`); if that run is gone, \
                         run `pipeline unlock` on any host",
                        path.display(),
                        text.trim()
                    ),
                    _ => {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("removing {}", path.display()))?;
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("cannot take the lock file {}", path.display())
}

/// Removes the lock file when this process holds it (`any`: whoever does).
pub fn release_lock_file(dir: &Path, any: bool) {
    let path = dir.join(LOCK_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let mut it = text.split_whitespace();
    let mine = it.next() == Some(pipeline_core::util::hostname().as_str())
        && it.next() == Some(std::process::id().to_string().as_str());
    if any || mine {
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_file_systems_are_told_by_their_magic() {
        assert_eq!(classify(0x6969), FsKind::Network("NFS"));
        assert_eq!(classify(0x0BD0_0BD0), FsKind::Network("Lustre"));
        assert_eq!(classify(0xEF53), FsKind::Local, "ext4");
        assert_eq!(classify(0x0102_1994), FsKind::Local, "tmpfs");
        let here = statfs_magic(Path::new("/")).expect("statfs of /");
        assert_ne!(here, 0);
    }
}
