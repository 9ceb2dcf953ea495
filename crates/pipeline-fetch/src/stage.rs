//! The `download` stage kind: fills each of the stage's outputs from its
//! source ([`DownloadParams`]), run by `pipeline` itself.
//!
//! - `local: PATH` — data the user already has (FakeAVCeleb comes through
//!   the authors' request form, so this is the common case). Nothing is
//!   copied: the output becomes a link to the folder (resolved to its
//!   absolute path), and the engine hashes the folder's content through the
//!   link, so a change in the folder shows in `pipeline status` and
//!   `pipeline verify` like a change to any output.
//! - `url` — fetched into the stage's item folder (`.pipeline/items/STAGE/
//!   NAME/`, which outlives the step: a crash keeps the `.part` file and the
//!   next run resumes it, and a verified archive is never fetched again),
//!   verified, then unpacked into the output (a lone top-level folder in the
//!   archive, as FakeAVCeleb's zip has, becomes the output itself).
//!
//! The output is then checked against the source's layout (FakeAVCeleb's by
//! default: `meta_data.csv` and the four category folders). Progress is
//! written in bytes to the step's `progress.json` (what `pipeline status`
//! and `run` show) and as a line on stderr every few seconds.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pipeline_core::stages::category::Category;
use pipeline_core::stages::download_params::{Digest, DownloadParams, Extract, Layout, Source};
use pipeline_core::stages::progress::Progress;
use pipeline_core::stages::{versions, Stage, StageContext};

use crate::archive;
use crate::http::{Checksum, Http, HttpOptions};

/// The kinds this crate implements (for `pipeline`'s registry).
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![Box::new(Download)]
}

pub struct Download;

impl Stage for Download {
    fn kind(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> u32 {
        versions::DOWNLOAD
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        DownloadParams::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = DownloadParams::from_json(ctx.params)
            .with_context(|| format!("stage {}: invalid parameters", ctx.stage))?;
        let outputs: Vec<&str> = ctx.outputs.keys().map(String::as_str).collect();
        p.match_outputs(&outputs)
            .with_context(|| format!("stage {}", ctx.stage))?;
        for (name, src) in &p.sources {
            if let Source::Local { path, layout } = src {
                link_local(ctx, name, path, *layout)
                    .with_context(|| format!("stage {}, source '{name}'", ctx.stage))?;
            }
        }
        let urls: VecDeque<_> = p
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::Url { .. }))
            .collect();
        if urls.is_empty() {
            return Ok(());
        }
        let http = Http::new(HttpOptions {
            retries: p.retries,
            read_timeout: Duration::from_secs(p.timeout_seconds),
            ..HttpOptions::default()
        })?;
        let meter = Meter::new(ctx.step_dir);
        let queue = Mutex::new(urls);
        let failures = Mutex::new(Vec::new());
        let workers = p.concurrency.min(queue.lock().map_or(1, |q| q.len()));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((name, src)) = next else { break };
                    if let Err(e) = fetch_source(ctx, &http, &meter, name, src) {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("{e:#}"));
                    }
                });
            }
        });
        meter.finish();
        let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
        if !failures.is_empty() {
            bail!("{}", failures.join("\n"));
        }
        Ok(())
    }
}

/// Makes the staged output a link to the user's folder.
fn link_local(ctx: &StageContext<'_>, name: &str, path: &Path, layout: Layout) -> Result<()> {
    let given = if path.is_absolute() {
        path.to_path_buf()
    } else {
        ctx.workspace.join(path)
    };
    let real = given.canonicalize().with_context(|| {
        format!(
            "the local folder {} does not exist: give the folder that holds the data \
             (a relative path is read from the workspace)",
            given.display()
        )
    })?;
    if !real.is_dir() {
        bail!(
            "{} is not a folder: `local` names the folder that holds the data",
            real.display()
        );
    }
    let staged = ctx.output(name)?;
    let final_place = final_location(ctx, staged)?;
    if real == final_place || real.starts_with(&final_place) || final_place.starts_with(&real) {
        bail!(
            "the local folder {} is where the stage's output goes ({}), which the engine \
             replaces on every run: move the data elsewhere (say {}_data) and point `local` there",
            real.display(),
            final_place.display(),
            final_place.display()
        );
    }
    check_layout(&real, layout)?;
    std::os::unix::fs::symlink(&real, staged)
        .with_context(|| format!("linking {} to {}", staged.display(), real.display()))
}

/// Where the staged output `staged` is moved once the step succeeds: the
/// engine stages an output at `STEP_DIR/staging/PATH` for the output
/// `PATH`. The last component is not resolved (it may be the link of an
/// earlier run); the folders above it are.
fn final_location(ctx: &StageContext<'_>, staged: &Path) -> Result<PathBuf> {
    let rel = staged
        .strip_prefix(ctx.step_dir.join("staging"))
        .with_context(|| format!("{} is not a staged output", staged.display()))?;
    let place = ctx.workspace.join(rel);
    let parent = place.parent().unwrap_or(ctx.workspace);
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    Ok(match place.file_name() {
        Some(n) => parent.join(n),
        None => parent,
    })
}

/// Checks that `dir` looks like `layout`.
fn check_layout(dir: &Path, layout: Layout) -> Result<()> {
    match layout {
        Layout::Any => Ok(()),
        Layout::Fakeavceleb => {
            let mut missing = Vec::new();
            if !dir.join("meta_data.csv").is_file() {
                missing.push("meta_data.csv".to_string());
            }
            for c in [
                Category::Rvra,
                Category::Rvfa,
                Category::Fvra,
                Category::Fvfa,
            ] {
                if !dir.join(c.folder()).is_dir() {
                    missing.push(format!("{}/", c.folder()));
                }
            }
            if !missing.is_empty() {
                bail!(
                    "{} does not look like FakeAVCeleb v1.2: {} missing at its top; point the \
                     source at the folder that holds meta_data.csv and the category folders \
                     (or set `layout: any` for other data)",
                    dir.display(),
                    missing.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// Fetches, verifies and unpacks one url source into its staged output.
fn fetch_source(
    ctx: &StageContext<'_>,
    http: &Http,
    meter: &Meter,
    name: &str,
    src: &Source,
) -> Result<()> {
    let Source::Url {
        url,
        digest,
        extract,
        dest,
        layout,
    } = src
    else {
        return Ok(());
    };
    let what = || format!("stage {}, source '{name}' ({url})", ctx.stage);
    let checksum = match digest {
        Digest::Sha256(h) => Checksum::Sha256(h.clone()),
        Digest::Blake3(h) => Checksum::Blake3(h.clone()),
    };
    let file = ctx.items_dir.join(name).join(file_name(url));
    let got = http
        .download(url, &file, Some(&checksum), &|done, total| {
            meter.update(name, done, total)
        })
        .with_context(|| {
            format!(
                "{}: the download failed; run again to resume it (the partial file stays in {})",
                what(),
                file.parent().unwrap_or(ctx.items_dir).display()
            )
        })?;
    eprintln!(
        "download: {name}: {} ({}{})",
        if got.fetched {
            "fetched"
        } else {
            "already here, verified"
        },
        pipeline_core::util::human_bytes(got.bytes),
        if got.resumed_from > 0 {
            format!(
                ", resumed at {}",
                pipeline_core::util::human_bytes(got.resumed_from)
            )
        } else {
            String::new()
        }
    );
    let out = ctx.output(name)?;
    let target = match dest {
        Some(d) => out.join(d),
        None => out.to_path_buf(),
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if *extract == Extract::None {
        // A hard link shares the verified bytes kept for the next run.
        if std::fs::hard_link(&file, &target).is_err() {
            std::fs::copy(&file, &target)
                .with_context(|| format!("{}: copying into {}", what(), target.display()))?;
        }
    } else {
        unpack(
            &file,
            *extract,
            &ctx.step_dir.join("unpack").join(name),
            &target,
        )
        .with_context(|| format!("{}: unpacking {}", what(), file.display()))?;
    }
    check_layout(&target, *layout).with_context(what)
}

/// Unpacks `file` into `scratch`, then moves the tree to `target`: the lone
/// top-level folder when the archive holds only that, else everything.
fn unpack(file: &Path, extract: Extract, scratch: &Path, target: &Path) -> Result<()> {
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let files = match extract {
        Extract::Zip => archive::extract_zip(file, scratch)?,
        Extract::Tar | Extract::TarGz => {
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let r = std::io::BufReader::new(f);
            if extract == Extract::TarGz {
                archive::extract_tar(flate2::read::GzDecoder::new(r), scratch)?
            } else {
                archive::extract_tar(r, scratch)?
            }
        }
        Extract::None => bail!("{} is a plain file, not an archive", file.display()),
    };
    eprintln!("download: unpacked {files} files from {}", file.display());
    let entries: Vec<_> = std::fs::read_dir(scratch)
        .with_context(|| format!("listing {}", scratch.display()))?
        .collect::<std::io::Result<_>>()?;
    let top = match entries.as_slice() {
        [only] if only.file_type()?.is_dir() => only.path(),
        _ => scratch.to_path_buf(),
    };
    std::fs::rename(&top, target)
        .with_context(|| format!("moving the unpacked tree to {}", target.display()))?;
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    Ok(())
}

/// The file name a URL's data is kept under: its last path segment, or
/// `download` when it has none worth using.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    let safe = !last.is_empty()
        && last != "."
        && last != ".."
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    if safe && !path.ends_with("//") && path.matches('/').count() > 2 {
        last.to_string()
    } else {
        "download".to_string()
    }
}

/// Sums the sources' bytes into the step's progress file and a stderr line.
struct Meter<'a> {
    dir: &'a Path,
    start: Instant,
    state: Mutex<MeterState>,
}

struct MeterState {
    per_source: BTreeMap<String, (u64, Option<u64>)>,
    written: Instant,
    printed: Instant,
}

const WRITE_EVERY: Duration = Duration::from_millis(500);
const PRINT_EVERY: Duration = Duration::from_secs(5);

impl<'a> Meter<'a> {
    fn new(dir: &'a Path) -> Meter<'a> {
        let now = Instant::now();
        Meter {
            dir,
            start: now,
            state: Mutex::new(MeterState {
                per_source: BTreeMap::new(),
                written: now,
                printed: now,
            }),
        }
    }

    fn update(&self, name: &str, done: u64, total: Option<u64>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.per_source.insert(name.to_string(), (done, total));
        if st.written.elapsed() >= WRITE_EVERY {
            st.written = Instant::now();
            let p = self.progress(&st);
            // A display only: a failed write must not fail the download.
            let _ = p.write(self.dir);
            if st.printed.elapsed() >= PRINT_EVERY {
                st.printed = Instant::now();
                eprintln!("download: {}", p.text());
            }
        }
    }

    fn finish(&self) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.progress(&st);
        let _ = p.write(self.dir);
        eprintln!("download: {}", p.text());
    }

    fn progress(&self, st: &MeterState) -> Progress {
        let done = st.per_source.values().map(|(d, _)| d).sum();
        let total = st.per_source.values().map(|(d, t)| t.unwrap_or(*d)).sum();
        Progress {
            done,
            total,
            elapsed_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes: true,
            ..Progress::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_file_name_is_its_last_segment_when_plain() {
        assert_eq!(
            file_name("https://e.org/a/FakeAVCeleb_v1.2.zip?sig=x"),
            "FakeAVCeleb_v1.2.zip"
        );
        assert_eq!(file_name("https://e.org/"), "download");
        assert_eq!(file_name("https://e.org"), "download");
        assert_eq!(file_name("https://e.org/a/b%2F..%2Fc"), "download");
    }
}
