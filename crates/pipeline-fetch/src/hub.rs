//! The Hugging Face hub's HTTP API for datasets, as far as the pipeline
//! needs it: list a dataset's files at a revision (following the API's
//! `Link` pagination), pick them by a glob, and build the URL that resolves
//! a file. Files are fetched with [`crate::http::Http::download`], verified
//! by the LFS sha256 the listing gives.
//!
//! The token comes from `HF_TOKEN` ([`token_from_env`]) and travels in the
//! client's `Authorization` header only; nothing here prints or stores it.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::http::Http;

/// The public hub; `HF_ENDPOINT` names a mirror.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One file of a dataset repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub path: String,
    pub size: u64,
    /// The LFS object id (the sha256 of the file's bytes) when the file is
    /// stored in LFS.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

/// Files of dataset `repo` at `revision` whose path matches the glob
/// `pattern` (`*` any run of characters, `/` included, as in Python's
/// fnmatch; `?` one character; `[abc]`, `[a-z]`, `[!a]` a class), sorted by
/// path.
pub fn list_dataset_files(
    http: &Http,
    endpoint: &str,
    repo: &str,
    revision: &str,
    pattern: &str,
) -> Result<Vec<HubFile>> {
    check_glob(pattern)?;
    let mut url = Some(format!(
        "{}/api/datasets/{repo}/tree/{}?recursive=true",
        endpoint.trim_end_matches('/'),
        encode(revision, false)
    ));
    let mut out = Vec::new();
    while let Some(u) = url.take() {
        let (page, link): (Vec<TreeEntry>, _) = http
            .get_json_page(&u)
            .with_context(|| format!("listing the files of dataset {repo} at {revision}"))?;
        for e in page {
            if e.kind == "file" && glob_match(pattern.as_bytes(), e.path.as_bytes()) {
                out.push(HubFile {
                    size: e.lfs.as_ref().and_then(|l| l.size).unwrap_or(e.size),
                    sha256: e.lfs.map(|l| l.oid.to_ascii_lowercase()),
                    path: e.path,
                });
            }
        }
        url = link.as_deref().and_then(next_link);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `{endpoint}/datasets/{repo}/resolve/{revision}/{path}`, the revision and
/// path percent-encoded.
pub fn dataset_file_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    format!(
        "{}/datasets/{repo}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        encode(revision, false),
        encode(path, true)
    )
}

/// The bearer token from `HF_TOKEN` when set and non-empty.
pub fn token_from_env() -> Option<String> {
    std::env::var("HF_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        let t = target.trim();
        is_next.then(|| t.strip_prefix('<')?.strip_suffix('>').map(str::to_string))?
    })
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` when
/// `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses a pattern with an unclosed `[`.
fn check_glob(pattern: &str) -> Result<()> {
    let p = pattern.as_bytes();
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'[' {
            match class_end(p, i) {
                Some(end) => i = end,
                None => bail!("file pattern '{pattern}': a '[' without its ']'"),
            }
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `open`.
fn class_end(p: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if j < p.len() && (p[j] == b'!' || p[j] == b'^') {
        j += 1;
    }
    // A `]` first in the class is a member.
    if j < p.len() && p[j] == b']' {
        j += 1;
    }
    (j..p.len()).find(|&k| p[k] == b']')
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (neg, class) = match class.first() {
        Some(b'!') | Some(b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            hit |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    hit != neg
}

/// fnmatch-style matching (see [`list_dataset_files`]).
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match class_end(p, pi) {
                Some(end) if class_matches(&p[pi + 1..end], s[si]) => Some(end + 1),
                Some(_) => None,
                None => (s[si] == b'[').then_some(pi + 1),
            },
            Some(&c) => (c == s[si]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn globs_match_as_fnmatch_does() {
        assert!(m("voxceleb2-dev-*.tar", "voxceleb2-dev-0000.tar"));
        assert!(!m("voxceleb2-dev-*.tar", "voxceleb2-dev-0000.tar.idx"));
        assert!(m("*.tar", "sub/dir/x.tar"));
        assert!(m("x-??.tar", "x-01.tar"));
        assert!(!m("x-??.tar", "x-1.tar"));
        assert!(m("x-[0-4].tar", "x-3.tar"));
        assert!(!m("x-[0-4].tar", "x-7.tar"));
        assert!(m("x-[!0-4].tar", "x-7.tar"));
        assert!(m("*", ""));
        assert!(!m("a", ""));
        assert!(check_glob("x-[0-4.tar").is_err());
    }

    #[test]
    fn urls_and_links() {
        assert_eq!(
            dataset_file_url("https://h.co/", "o/r", "refs/pr/1", "a b/c.tar"),
            "https://h.co/datasets/o/r/resolve/refs%2Fpr%2F1/a%20b/c.tar"
        );
        assert_eq!(
            next_link("<https://h.co/api/x?cursor=abc>; rel=\"next\""),
            Some("https://h.co/api/x?cursor=abc".into())
        );
        assert_eq!(next_link("<https://h.co/p>; rel=\"prev\""), None);
    }
}
