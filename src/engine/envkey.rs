//! The declared environment variables of a stage (`env:`) are part of its
//! fingerprint, but their values may be secrets (`HF_TOKEN`): the store, the
//! status and the lineage hold only a keyed BLAKE3 hash of each value, under a
//! random key kept in the workspace (`.pipeline/env.key`, mode 0600), so the
//! store alone tells nothing, not even by guessing short values.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What a recorded value starts with when it is a keyed hash.
const PREFIX: &str = "b3k:";
const FILE: &str = "env.key";

/// The workspace's key for hashing environment values.
#[derive(Clone)]
pub struct EnvKey([u8; 32]);

impl std::fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvKey(..)")
    }
}

impl EnvKey {
    /// Reads the key in `state_dir`, making it first when there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<EnvKey> {
        let path = state_dir.join(FILE);
        if !path.exists() {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .context("reading /dev/urandom for the workspace's env key")?;
            let tmp = state_dir.join(format!("{FILE}.{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(&key)?;
            f.sync_all()?;
            // A link, unlike a rename, never replaces a key another process
            // made meanwhile: the first one made wins.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            if let Err(e) = linked {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!(
                "{} is damaged ({} bytes, not 32); delete it: the stages that declare `env:` \
                 then run once more",
                path.display(),
                bytes.len()
            );
        };
        Ok(EnvKey(key))
    }

    /// The recorded form of a value.
    pub fn digest(&self, value: &str) -> String {
        format!(
            "{PREFIX}{}",
            blake3::keyed_hash(&self.0, value.as_bytes()).to_hex()
        )
    }

    /// A UUID (RFC 9562 version 8: derived, not random) for `what`, stable
    /// within this workspace and unguessable outside it: the run ids of a
    /// lineage export.
    pub fn uuid(&self, what: &str) -> String {
        let h = blake3::keyed_hash(&self.0, format!("uuid:{what}").as_bytes());
        let mut b: [u8; 16] = h.as_bytes()[..16].try_into().expect("16 of 32 bytes");
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..]
        )
    }

    /// `recorded` as a digest: stores written before values were hashed hold
    /// the value itself.
    pub fn as_digest(&self, recorded: &str) -> String {
        if recorded.starts_with(PREFIX) {
            recorded.to_string()
        } else {
            self.digest(recorded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_8_stable_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let k = EnvKey::load_or_create(dir.path()).unwrap();
        let a = k.uuid("step:1");
        assert_eq!(a, k.uuid("step:1"));
        assert_ne!(a, k.uuid("step:2"));
        let parts: Vec<&str> = a.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{a}");
        assert!(parts[2].starts_with('8'), "version 8: {a}");
        assert!("89ab".contains(&parts[3][..1]), "RFC 9562 variant: {a}");
        let other = tempfile::tempdir().unwrap();
        let k2 = EnvKey::load_or_create(other.path()).unwrap();
        assert_ne!(a, k2.uuid("step:1"), "another workspace, another id");
    }

    #[test]
    fn the_key_is_made_once_private_and_keys_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let a = EnvKey::load_or_create(dir.path()).unwrap();
        let b = EnvKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.digest("secret-XYZ"), b.digest("secret-XYZ"));
        assert_ne!(a.digest("secret-XYZ"), a.digest("other"));
        assert!(!a.digest("secret-XYZ").contains("secret"));
        assert_eq!(a.as_digest("secret-XYZ"), a.digest("secret-XYZ"));
        assert_eq!(a.as_digest(&a.digest("x")), a.digest("x"));
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let other = tempfile::tempdir().unwrap();
        let c = EnvKey::load_or_create(other.path()).unwrap();
        assert_ne!(
            c.digest("secret-XYZ"),
            a.digest("secret-XYZ"),
            "keyed per workspace"
        );

        std::fs::write(other.path().join(FILE), b"short").unwrap();
        let e = EnvKey::load_or_create(other.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged") && e.contains("delete it"), "{e}");
    }
}
