//! The download kind's parameters, checked at plan time: where each of the
//! stage's outputs comes from.
//!
//! ```json
//! {"sources": {"fakeavceleb": {"local": "/data/FakeAVCeleb_v1.2"}}}
//! {"sources": {"fakeavceleb": {"url": "https://...", "sha256": "...", "extract": "zip"}},
//!  "concurrency": 4, "retries": 5, "timeout_seconds": 60}
//! ```
//!
//! A source is named after the output it fills (`outs:` of the stage) and
//! is either a URL with its checksum (fetched, verified, unpacked) or a
//! folder the user already has (`local:`, used in place, never copied).
//! What the fetched or local data must look like is `layout` (FakeAVCeleb's
//! by default, since that is what the stage is for; `any` checks nothing).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The parameters of a download step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadParams {
    /// Output name -> where its data comes from.
    pub sources: BTreeMap<String, Source>,
    /// Sources fetched at once.
    pub concurrency: usize,
    /// Retries of a failing request (connection errors, timeouts, 5xx).
    pub retries: u32,
    /// The longest wait for a server's answer or for any read of a body.
    pub timeout_seconds: u64,
}

/// Where one output's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Fetched over HTTP(S), verified, unpacked when an archive.
    Url {
        url: String,
        digest: Digest,
        extract: Extract,
        /// Where inside the output the unpacked tree (or the file) goes;
        /// `None`: the output itself.
        dest: Option<PathBuf>,
        layout: Layout,
    },
    /// A folder the user already has: the output links to it, nothing is
    /// copied. A relative path is relative to the workspace.
    Local { path: PathBuf, layout: Layout },
}

/// An expected content hash (lowercase hex, 64 digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    Sha256(String),
    Blake3(String),
}

/// How a fetched file is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extract {
    Zip,
    Tar,
    TarGz,
    /// Kept as the file it is.
    None,
}

/// What an output must look like once it is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `meta_data.csv` and the four category folders at the top.
    #[default]
    Fakeavceleb,
    /// Anything.
    Any,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    sources: BTreeMap<String, RawSource>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
}

fn default_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    5
}
fn default_timeout() -> u64 {
    60
}

/// One source as written; which keys go together is checked after parsing,
/// so that each mistake gets its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    blake3: Option<String>,
    #[serde(default)]
    extract: Option<Extract>,
    #[serde(default)]
    dest: Option<String>,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    layout: Layout,
    /// A note for people (the shipped config says where the URL comes from).
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
}

impl DownloadParams {
    /// Every source names an output of the stage and every output has a
    /// source: checked when the plan is made and again when the step runs.
    pub fn match_outputs(&self, outputs: &[&str]) -> Result<()> {
        for name in self.sources.keys() {
            if !outputs.contains(&name.as_str()) {
                bail!(
                    "source '{name}' names no output of the stage (outputs: {}); \
                     name each source after the output it fills",
                    outputs.join(", ")
                );
            }
        }
        for name in outputs {
            if !self.sources.contains_key(*name) {
                bail!(
                    "output '{name}' has no source; add `sources: {{\"{name}\": \
                     {{\"local\": \"/path/to/it\"}}}}` or a `url` with its `sha256`"
                );
            }
        }
        Ok(())
    }

    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        let raw: RawParams = super::parse_params(params)?;
        if raw.sources.is_empty() {
            bail!("parameter 'sources': no source given; name each output's source (`sources: {{NAME: {{local: PATH}}}}` or `{{url: ..., sha256: ...}}`)");
        }
        if raw.concurrency == 0 {
            bail!("parameter 'concurrency': must be at least 1");
        }
        if raw.timeout_seconds == 0 {
            bail!("parameter 'timeout_seconds': must be at least 1");
        }
        let sources = raw
            .sources
            .into_iter()
            .map(|(name, s)| {
                let src = Source::from_raw(s).with_context(|| format!("source '{name}'"))?;
                Ok((name, src))
            })
            .collect::<Result<_>>()?;
        Ok(DownloadParams {
            sources,
            concurrency: raw.concurrency,
            retries: raw.retries,
            timeout_seconds: raw.timeout_seconds,
        })
    }
}

impl Source {
    fn from_raw(s: RawSource) -> Result<Source> {
        match (s.url, s.local) {
            (Some(_), Some(_)) => bail!("give either `url` or `local`, not both"),
            (None, Some(local)) => {
                if s.sha256.is_some()
                    || s.blake3.is_some()
                    || s.extract.is_some()
                    || s.dest.is_some()
                {
                    bail!("a `local` folder is used as it is: `sha256`, `blake3`, `extract` and `dest` go with `url` only");
                }
                if local.trim().is_empty() {
                    bail!("`local` is empty: give the folder that holds the data");
                }
                Ok(Source::Local {
                    path: PathBuf::from(local),
                    layout: s.layout,
                })
            }
            (None, None) => bail!(
                "no `url` and no `local`: FakeAVCeleb comes through the authors' request form; \
                 put the URL and sha256 you receive there (`\"url\": \"https://...\", \
                 \"sha256\": \"...\"`), or, when you have the data already, replace this source \
                 with `{{\"local\": \"/path/to/FakeAVCeleb_v1.2\"}}`"
            ),
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("url '{url}' is not an http:// or https:// URL");
                }
                let digest = match (s.sha256, s.blake3) {
                    (Some(h), None) => Digest::Sha256(hex64("sha256", &h)?),
                    (None, Some(h)) => Digest::Blake3(hex64("blake3", &h)?),
                    (Some(_), Some(_)) => {
                        bail!("give one checksum, `sha256` or `blake3`, not both")
                    }
                    (None, None) => bail!(
                        "url {url} has no checksum: add the `sha256` (or `blake3`) the data's \
                         publisher gives, so that a damaged or different file is caught"
                    ),
                };
                let extract = match s.extract {
                    Some(e) => e,
                    None => Extract::by_extension(&url).with_context(|| {
                        format!(
                            "cannot tell from url {url} whether it is an archive: \
                             add `extract: zip`, `tar`, `tar_gz` or `none`"
                        )
                    })?,
                };
                if extract == Extract::None && s.layout == Layout::Fakeavceleb {
                    bail!("a single file (`extract: none`) cannot have FakeAVCeleb's layout: add `layout: any`, or the `extract` of the archive");
                }
                let dest = s.dest.map(|d| inner_path(&d)).transpose()?;
                Ok(Source::Url {
                    url,
                    digest,
                    extract,
                    dest,
                    layout: s.layout,
                })
            }
        }
    }
}

impl Extract {
    /// By the URL's file name: `.zip`, `.tar`, `.tar.gz`/`.tgz`; `None` when
    /// it is none of these.
    pub fn by_extension(url: &str) -> Option<Extract> {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        if path.ends_with(".zip") {
            Some(Extract::Zip)
        } else if path.ends_with(".tar") {
            Some(Extract::Tar)
        } else if path.ends_with(".tar.gz") || path.ends_with(".tgz") {
            Some(Extract::TarGz)
        } else {
            None
        }
    }
}

impl Digest {
    /// `sha256` or `blake3`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::Blake3(_) => "blake3",
        }
    }

    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::Blake3(h) => h,
        }
    }
}

fn hex64(algo: &str, h: &str) -> Result<String> {
    let h = h.trim().to_ascii_lowercase();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{algo}` must be 64 hex digits, not '{h}'");
    }
    Ok(h)
}

/// A relative path that stays inside the output.
fn inner_path(d: &str) -> Result<PathBuf> {
    let p = Path::new(d);
    if d.trim().is_empty()
        || !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("`dest` '{d}' must be a relative path inside the output (no `..`, not absolute)");
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        format!("{:#}", DownloadParams::from_json(&v).unwrap_err())
    }

    #[test]
    fn a_local_folder_is_one_line_and_urls_need_a_checksum() {
        let p = DownloadParams::from_json(&json!({"sources": {"fakeavceleb": {"local": "/d/F"}}}))
            .unwrap();
        assert_eq!(
            p.sources["fakeavceleb"],
            Source::Local {
                path: "/d/F".into(),
                layout: Layout::Fakeavceleb
            }
        );
        assert_eq!((p.concurrency, p.retries, p.timeout_seconds), (4, 5, 60));
        let h = "A".repeat(64);
        let p = DownloadParams::from_json(&json!({"sources": {"x": {
            "url": "https://e.org/a/F.zip?sig=1", "sha256": h, "dest": "v1"}}}))
        .unwrap();
        let Source::Url {
            digest,
            extract,
            dest,
            ..
        } = &p.sources["x"]
        else {
            panic!("{p:?}")
        };
        assert_eq!(digest, &Digest::Sha256("a".repeat(64)));
        assert_eq!(*extract, Extract::Zip);
        assert_eq!(dest.as_deref(), Some(Path::new("v1")));

        let e = err(json!({"sources": {"fakeavceleb": {"url": null, "sha256": null}}}));
        assert!(
            e.contains("source 'fakeavceleb'") && e.contains("request form"),
            "{e}"
        );
        assert!(e.contains("\"local\""), "{e}");
        let e = err(json!({"sources": {"x": {"url": "https://e.org/F.zip"}}}));
        assert!(e.contains("no checksum"), "{e}");
        let e = err(json!({"sources": {"x": {"url": "https://e.org/F", "sha256": h}}}));
        assert!(e.contains("add `extract: zip`"), "{e}");
        let e = err(json!({"sources": {"x": {"local": "/a", "sha256": h}}}));
        assert!(e.contains("go with `url` only"), "{e}");
        let e = err(
            json!({"sources": {"x": {"url": "https://e.org/F.zip", "sha256": h, "dest": "../up"}}}),
        );
        assert!(e.contains("inside the output"), "{e}");
        let e = err(json!({"sources": {"x": {"local": "/a"}}, "concurency": 2}));
        assert!(e.contains("unknown field `concurency`"), "{e}");
        let e = err(json!({"sources": {"x": {"lcoal": "/a"}}}));
        assert!(e.contains("unknown field `lcoal`"), "{e}");
    }

    /// The paper profile ships without a URL (it comes from the authors'
    /// form): planning says what to write; one `local` line is enough.
    #[test]
    fn the_shipped_config_says_where_the_data_comes_from() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/paper/download.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let e = format!("{:#}", DownloadParams::from_json(&v).unwrap_err());
        assert!(e.contains("request form") && e.contains("local"), "{e}");
        v["sources"]["fakeavceleb"] = json!({"local": "/data/FakeAVCeleb_v1.2"});
        let p = DownloadParams::from_json(&v).unwrap();
        assert_eq!((p.concurrency, p.retries), (4, 5));
    }
}
