//! HTTP(S) downloads that survive the network: a file is fetched into
//! `DEST.part`, resumed with `Range: bytes=N-` after a dropped connection,
//! verified against the checksum the configuration gives, and only then
//! renamed to `DEST`. So a file at `DEST` is always complete: a re-run finds
//! it (verifying it when a checksum is known) and fetches nothing.
//!
//! Retries: connection errors, timeouts, `408`, `429` and `5xx` are retried
//! with exponential backoff (a server's small `Retry-After` is honoured);
//! any other `4xx` fails at once, naming the status and the URL. An attempt
//! that grew the `.part` file past its best length resets the count, so a
//! long download over a flaky link is not given up while it progresses.
//!
//! A checksum mismatch leaves any file already at `DEST` untouched and moves
//! the bad download aside to `DEST.rejected`, named in the error with the
//! expected and actual hashes.
//!
//! The bearer token (`HF_TOKEN`) goes into the `Authorization` header only:
//! it is never printed, logged, or part of an error (`HttpOptions`'s `Debug`
//! hides it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, LINK, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Digest;

/// A file's expected content hash, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha256(String),
    Blake3(String),
}

impl Checksum {
    /// A checksum of algorithm `algo` (`sha256` or `blake3`); `hex` must be
    /// 64 hex digits (either case; kept lowercase).
    pub fn parse(algo: &str, hex: &str) -> Result<Checksum> {
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("a {algo} checksum is 64 hex digits, not '{hex}'");
        }
        match algo {
            "sha256" => Ok(Checksum::Sha256(hex)),
            "blake3" => Ok(Checksum::Blake3(hex)),
            other => bail!("unknown checksum algorithm '{other}' (known: sha256, blake3)"),
        }
    }

    /// `sha256` or `blake3`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Blake3(_) => "blake3",
        }
    }

    /// The expected hash, lowercase hex.
    pub fn expected(&self) -> &str {
        match self {
            Checksum::Sha256(h) | Checksum::Blake3(h) => h,
        }
    }

    /// The hash of the file at `path` under this checksum's algorithm.
    pub fn of_file(&self, path: &Path) -> Result<String> {
        if let Checksum::Blake3(_) = self {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            return Ok(pipeline_core::hash::hash_file(path, size)?
                .to_hex()
                .to_string());
        }
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut sha = sha2::Sha256::new();
        std::io::copy(&mut f, &mut sha).with_context(|| format!("reading {}", path.display()))?;
        Ok(hex::encode(sha.finalize()))
    }

    /// Whether the file at `path` has this hash.
    pub fn verify(&self, path: &Path) -> Result<bool> {
        Ok(self.of_file(path)? == self.expected())
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.expected())
    }
}

/// How patient a client is.
#[derive(Clone)]
pub struct HttpOptions {
    /// Retries after the first attempt, on errors worth retrying.
    pub retries: u32,
    /// The wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    pub connect_timeout: Duration,
    /// The longest wait for the response's headers or for any read of its
    /// body (not the whole transfer).
    pub read_timeout: Duration,
    /// Sent as `Authorization: Bearer ...`; never shown.
    pub bearer_token: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            retries: 5,
            backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            bearer_token: None,
        }
    }
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// A client; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Http {
    client: Client,
    opts: HttpOptions,
}

/// What [`Http::download`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// `false` when the file was already there (and verified, when a
    /// checksum was given): nothing was requested.
    pub fetched: bool,
    /// The length of the `.part` file the download resumed from (0: from
    /// the start).
    pub resumed_from: u64,
}

/// A server's `Retry-After` above this is not waited for: the backoff is used.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt, after the server's wait if it gave one.
    Retry(anyhow::Error, Option<Duration>),
    /// Final (a 4xx, a local file error).
    Fatal(anyhow::Error),
}

impl Http {
    pub fn new(opts: HttpOptions) -> Result<Http> {
        let client = Client::builder()
            .user_agent(concat!("pipeline-fetch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            // The blocking client applies this to the wait for the headers
            // and to each read of the body, never to the whole transfer.
            .timeout(opts.read_timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Http { client, opts })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// GETs `url` into `dest` through `dest.part` (resumed with `Range` when
    /// the `.part` exists and the server answers 206; restarted when it
    /// answers 200), verified against `checksum`, then renamed to `dest`.
    /// A `dest` already present is not fetched again when it verifies (or,
    /// without a checksum, when it exists: only a complete download is ever
    /// renamed there). `progress(bytes_done, total)` is called as bytes
    /// arrive.
    pub fn download(
        &self,
        url: &str,
        dest: &Path,
        checksum: Option<&Checksum>,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<Downloaded> {
        if dest.is_file() {
            let ok = match checksum {
                Some(c) => c.verify(dest)?,
                None => true,
            };
            if ok {
                let bytes = std::fs::metadata(dest)?.len();
                progress(bytes, Some(bytes));
                return Ok(Downloaded {
                    path: dest.to_path_buf(),
                    bytes,
                    fetched: false,
                    resumed_from: 0,
                });
            }
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let part = with_suffix(dest, ".part");
        let resumed_from = part_len(&part);
        let mut best = resumed_from;
        let mut failures = 0u32;
        loop {
            match self.fetch_once(url, &part, progress) {
                Ok(()) => break,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e, wait)) => {
                    let now = part_len(&part);
                    if now > best {
                        best = now;
                        failures = 0;
                    }
                    self.wait_or_give_up(url, &mut failures, e, wait)?;
                }
            }
        }
        let bytes = part_len(&part);
        if let Some(c) = checksum {
            let actual = c.of_file(&part)?;
            if actual != c.expected() {
                let rejected = with_suffix(dest, ".rejected");
                std::fs::rename(&part, &rejected).with_context(|| {
                    format!("moving the bad download aside to {}", rejected.display())
                })?;
                bail!(
                    "{url}: checksum mismatch: expected {} {}, got {actual} ({bytes} bytes); \
                     the download was moved aside to {}{}. Check the checksum in the \
                     configuration, or delete that file and run again to fetch it anew",
                    c.algorithm(),
                    c.expected(),
                    rejected.display(),
                    if dest.exists() {
                        format!(" and {} was left as it was", dest.display())
                    } else {
                        String::new()
                    }
                );
            }
        }
        std::fs::rename(&part, dest)
            .with_context(|| format!("moving {} into place", dest.display()))?;
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            fetched: true,
            resumed_from,
        })
    }

    /// One GET into `part`, from where it ends.
    fn fetch_once(
        &self,
        url: &str,
        part: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> std::result::Result<(), Failure> {
        let offset = part_len(part);
        let mut req = self.request(url);
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().map_err(|e| retry_on(url, e))?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // The `.part` is as long as the file or longer (the file changed
            // on the server): it cannot be trusted, start over.
            remove_part(part).map_err(Failure::Fatal)?;
            return Err(Failure::Retry(
                anyhow!("{url}: the server refused to resume at byte {offset}; starting over"),
                Some(Duration::ZERO),
            ));
        }
        let resp = check_status(url, resp)?;
        let (mut done, total) = if resp.status() == StatusCode::PARTIAL_CONTENT {
            match content_range(&resp) {
                Some((start, total)) if start == offset => (offset, total),
                _ => {
                    remove_part(part).map_err(Failure::Fatal)?;
                    return Err(Failure::Retry(
                        anyhow!("{url}: the server resumed at another byte than {offset}; starting over"),
                        Some(Duration::ZERO),
                    ));
                }
            }
        } else {
            // 200: the whole file, whatever was asked.
            (0, resp.content_length())
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(done > 0)
            .truncate(done == 0)
            .open(part)
            .with_context(|| format!("opening {}", part.display()))
            .map_err(Failure::Fatal)?;
        progress(done, total);
        let mut resp = resp;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.flush();
                    return Err(Failure::Retry(
                        anyhow!("{url}: the transfer broke off after {done} bytes: {e}"),
                        None,
                    ));
                }
            };
            file.write_all(&buf[..n])
                .with_context(|| format!("writing {}", part.display()))
                .map_err(Failure::Fatal)?;
            done += n as u64;
            progress(done, total);
        }
        file.sync_all()
            .with_context(|| format!("writing {}", part.display()))
            .map_err(Failure::Fatal)?;
        if let Some(t) = total.filter(|t| done < *t) {
            return Err(Failure::Retry(
                anyhow!("{url}: the connection closed after {done} of {t} bytes"),
                None,
            ));
        }
        Ok(())
    }

    /// GETs `url` and parses its JSON body (retried like a download).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        self.get_json_page(url).map(|(t, _)| t)
    }

    /// As [`Http::get_json`], with the raw `Link` header (for pagination).
    pub fn get_json_page<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<(T, Option<String>)> {
        let mut failures = 0u32;
        loop {
            let attempt = || -> std::result::Result<(Vec<u8>, Option<String>), Failure> {
                let resp = self.request(url).send().map_err(|e| retry_on(url, e))?;
                let resp = check_status(url, resp)?;
                let link = resp
                    .headers()
                    .get(LINK)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = resp.bytes().map_err(|e| retry_on(url, e))?;
                Ok((body.to_vec(), link))
            };
            match attempt() {
                Ok((body, link)) => {
                    let t = serde_json::from_slice(&body)
                        .with_context(|| format!("{url}: the answer is not the JSON expected"))?;
                    return Ok((t, link));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e, wait)) => {
                    self.wait_or_give_up(url, &mut failures, e, wait)?
                }
            }
        }
    }

    fn request(&self, url: &str) -> reqwest::blocking::RequestBuilder {
        let req = self.client.get(url);
        match &self.opts.bearer_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sleeps before the next attempt, or fails with `err` when the retries
    /// are spent.
    fn wait_or_give_up(
        &self,
        url: &str,
        failures: &mut u32,
        err: anyhow::Error,
        server_wait: Option<Duration>,
    ) -> Result<()> {
        *failures += 1;
        if *failures > self.opts.retries {
            return Err(err.context(format!(
                "GET {url}: giving up after {} attempts in a row failed",
                self.opts.retries + 1
            )));
        }
        let backoff = self
            .opts
            .backoff
            .saturating_mul(1u32 << (*failures - 1).min(16))
            .min(MAX_BACKOFF);
        let wait = server_wait
            .filter(|w| *w <= MAX_RETRY_AFTER)
            .unwrap_or(backoff);
        std::thread::sleep(wait);
        Ok(())
    }
}

/// A 2xx passes; 408, 429 and 5xx are retried; any other status is final.
fn check_status(url: &str, resp: Response) -> std::result::Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let err = anyhow!("GET {url}: the server answered {status}");
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        let wait = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Failure::Retry(err, wait));
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (the server wants credentials: for the Hugging Face hub set HF_TOKEN)"
        }
        StatusCode::NOT_FOUND => " (check the URL)",
        _ => "",
    };
    Err(Failure::Fatal(anyhow!(
        "GET {url}: the server answered {status}{hint}"
    )))
}

/// Connection errors and timeouts are retried; an error building the request
/// (a malformed URL) is not.
fn retry_on(url: &str, e: reqwest::Error) -> Failure {
    // reqwest's message names the URL; strip it so a token in a query
    // string could not leak, and name the URL ourselves.
    let e = e.without_url();
    if e.is_builder() {
        Failure::Fatal(anyhow!("GET {url}: {e}"))
    } else {
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "failed"
        };
        Failure::Retry(anyhow!("GET {url}: {what}: {e:#}"), None)
    }
}

/// `Content-Range: bytes START-END/TOTAL` -> (START, TOTAL when known).
fn content_range(resp: &Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = v.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn part_len(part: &Path) -> u64 {
    std::fs::metadata(part).map(|m| m.len()).unwrap_or(0)
}

fn remove_part(part: &Path) -> Result<()> {
    match std::fs::remove_file(part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", part.display()))
        }
        _ => Ok(()),
    }
}

/// `dest` with `suffix` appended to its file name (`a.zip` -> `a.zip.part`).
pub fn with_suffix(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_not_in_debug_output() {
        let o = HttpOptions {
            bearer_token: Some("hf_secret_value".into()),
            ..HttpOptions::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("hf_secret_value"), "{s}");
        assert!(s.contains("<hidden>"), "{s}");
    }

    #[test]
    fn checksums_are_64_hex_digits_of_a_known_algorithm() {
        let h = "AB".repeat(32);
        let c = Checksum::parse("sha256", &h).unwrap();
        assert_eq!(c.expected(), "ab".repeat(32));
        assert!(Checksum::parse("sha256", "abc").is_err());
        assert!(Checksum::parse("md5", &h).is_err());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(Checksum::parse("sha256", sha).unwrap().verify(&f).unwrap());
        let b3 = blake3::hash(b"abc").to_hex().to_string();
        assert!(Checksum::parse("blake3", &b3).unwrap().verify(&f).unwrap());
        assert!(!Checksum::parse("blake3", sha).unwrap().verify(&f).unwrap());
    }
}
