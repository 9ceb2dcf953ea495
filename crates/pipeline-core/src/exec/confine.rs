//! Outputs stay inside the workspace, links or not. Declared paths are
//! checked as text when the pipeline is read (no `..`, no absolute paths);
//! this checks where they really are, just before a step deletes, stages or
//! moves anything: each output's parent folders (and a command's `wdir`) are
//! resolved through any links, and a real location outside the workspace is
//! refused unless it lies under a root the workspace allows explicitly, in
//! `workspace.yaml` at its top:
//!
//! ```yaml
//! allow_outside: [/scratch/me]   # e.g. data/ linked to a scratch file system
//! ```
//!
//! Inputs may be read through links; only writing is confined.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The workspace's own settings file, at its top.
pub const FILE: &str = "workspace.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    allow_outside: Vec<PathBuf>,
}

/// The roots outside the workspace that outputs may be written under, as
/// `workspace.yaml` lists them (resolved; a root that does not exist is an
/// error, so a typo is not silently ignored).
pub fn allowed_roots(root: &Path) -> Result<Vec<PathBuf>> {
    let file = root.join(FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(Vec::new());
    };
    let s: Settings = serde_yaml::from_str(&text).with_context(|| {
        format!(
            "{}: expected `allow_outside: [/a/folder, ...]`",
            file.display()
        )
    })?;
    s.allow_outside
        .iter()
        .map(|p| {
            if !p.is_absolute() {
                bail!(
                    "{}: allow_outside root {} must be an absolute path",
                    file.display(),
                    p.display()
                );
            }
            p.canonicalize().with_context(|| {
                format!(
                    "{}: allow_outside root {} does not exist",
                    file.display(),
                    p.display()
                )
            })
        })
        .collect()
}

/// Where `rel` (a normalised workspace-relative path) really is: its parent
/// folders resolved through links as far as they exist, the rest appended.
/// Also returns the first link on the way, for the error message.
fn real_location(root: &Path, rel: &str) -> Result<(PathBuf, Option<(PathBuf, PathBuf)>)> {
    let mut real = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mut first_link = None;
    let mut as_written = root.to_path_buf();
    let parts: Vec<Component> = Path::new(rel).components().collect();
    for (i, c) in parts.iter().enumerate() {
        as_written.push(c);
        let next = real.join(c);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() && !last => {
                let target = next
                    .canonicalize()
                    .with_context(|| format!("resolving the link {}", as_written.display()))?;
                if first_link.is_none() {
                    first_link = Some((as_written.clone(), std::fs::read_link(&next)?));
                }
                real = target;
            }
            // The output itself may be a link: it is replaced, not followed.
            _ => real = next,
        }
    }
    Ok((real, first_link))
}

/// Refuses to let step `stage` write `rel` when its real location is outside
/// the workspace and every allowed root. `what` names it ("output", "wdir").
pub fn check_writable(
    root: &Path,
    allowed: &[PathBuf],
    stage: &str,
    what: &str,
    rel: &str,
) -> Result<()> {
    let top = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let (real, link) = real_location(root, rel)?;
    if real.starts_with(&top) || allowed.iter().any(|a| real.starts_with(a)) {
        return Ok(());
    }
    let via = match link {
        Some((at, to)) => format!(" ({} is a link to {})", at.display(), to.display()),
        None => String::new(),
    };
    bail!(
        "stage {stage}: {what} {rel} resolves to {}, outside the workspace{via}; nothing was \
         deleted or written. Remove the link, or allow that location in {}/{FILE} \
         (`allow_outside: [/its/root]`)",
        real.display(),
        top.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_out_of_the_workspace_are_refused_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let (ws, outside) = (tmp.path().join("ws"), tmp.path().join("outside"));
        std::fs::create_dir_all(ws.join("data")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, ws.join("ext")).unwrap();
        symlink(ws.join("data"), ws.join("inside")).unwrap();
        check_writable(&ws, &[], "s", "output", "data/x").unwrap();
        check_writable(&ws, &[], "s", "output", "inside/x").unwrap();
        check_writable(&ws, &[], "s", "output", "new/deeper/x").unwrap();
        // A link as the output itself is replaced, never followed.
        check_writable(&ws, &[], "s", "output", "ext").unwrap();
        let e = check_writable(&ws, &[], "s", "output", "ext/result")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stage s") && e.contains("ext/result") && e.contains("is a link to"),
            "{e}"
        );
        assert!(e.contains("allow_outside"), "{e}");
        let allowed = [outside.canonicalize().unwrap()];
        check_writable(&ws, &allowed, "s", "output", "ext/result").unwrap();

        std::fs::write(
            ws.join(FILE),
            format!("allow_outside: [{}]\n", outside.display()),
        )
        .unwrap();
        assert_eq!(allowed_roots(&ws).unwrap(), allowed);
        std::fs::write(ws.join(FILE), "allow_outside: [/no/such/root]\n").unwrap();
        assert!(allowed_roots(&ws)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        std::fs::write(ws.join(FILE), "allow_outside: [relative]\n").unwrap();
        assert!(allowed_roots(&ws)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
    }
}
