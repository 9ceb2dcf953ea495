//! Workspace-relative paths: parsed once, normalised, never escaping the
//! workspace. Every record that names a path (the pipeline, job.json,
//! result.json, the store) holds a [`RelPath`]; reading one back validates
//! it again, so a damaged record is an error, never a path outside the
//! workspace.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A normalised, '/'-separated path inside the workspace ("data/elements").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl TryFrom<String> for RelPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RelPath::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl AsRef<Path> for RelPath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl RelPath {
    /// Parses `s`; the error says why it is not a workspace path.
    pub fn parse(s: &str) -> Result<RelPath, String> {
        if s.trim().is_empty() {
            return Err("an empty path".into());
        }
        let p = Path::new(s);
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "'{s}' is absolute: paths are relative to the workspace (-w); \
                         move the file into the workspace or link it there"
                    ))
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(format!(
                            "'{s}' escapes the workspace: paths must stay inside it (-w)"
                        ));
                    }
                }
                Component::Normal(n) => match n.to_str() {
                    Some(n) => parts.push(n.to_string()),
                    None => return Err(format!("'{s}' is not valid UTF-8")),
                },
            }
        }
        if parts.is_empty() {
            return Err(format!("'{s}' names the workspace itself"));
        }
        if parts[0] == ".pipeline" {
            return Err(format!("'{s}' is inside .pipeline, the store's own folder"));
        }
        Ok(RelPath(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// Whether one path is the other or lies inside it.
    pub fn overlaps(&self, other: &RelPath) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// Whether `other` is this path or lies inside it.
    pub fn contains(&self, other: &RelPath) -> bool {
        other.0 == self.0
            || (other.0.len() > self.0.len()
                && other.0.starts_with(&self.0)
                && other.0.as_bytes()[self.0.len()] == b'/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects_escapes() {
        assert_eq!(RelPath::parse("./data//x/../y").unwrap().as_str(), "data/y");
        assert!(RelPath::parse("../x").unwrap_err().contains("escapes"));
        assert!(RelPath::parse("a/../../x").unwrap_err().contains("escapes"));
        assert!(RelPath::parse("/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(RelPath::parse(".").is_err());
    }

    #[test]
    fn a_record_holding_a_bad_path_does_not_read() {
        let p: RelPath = serde_json::from_str(r#""data/./x""#).unwrap();
        assert_eq!(p.as_str(), "data/x");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""data/x""#);
        let e = serde_json::from_str::<RelPath>(r#""../../etc/passwd""#).unwrap_err();
        assert!(e.to_string().contains("escapes the workspace"), "{e}");
    }

    #[test]
    fn containment_respects_components() {
        let a = RelPath::parse("data/el").unwrap();
        assert!(a.contains(&RelPath::parse("data/el/x").unwrap()));
        assert!(!a.contains(&RelPath::parse("data/elements").unwrap()));
        assert!(RelPath::parse("data").unwrap().overlaps(&a));
    }
}
