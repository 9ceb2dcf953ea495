//! The voxceleb_subset stage against a real HTTP server on 127.0.0.1 that
//! plays the Hugging Face hub: its tree API lists small WebDataset tar
//! shards whose `.m4a` members the `ffmpeg` CLI made, and serves them with
//! the faults a real download meets (a 503, a connection dropped mid-body).
//! The last test runs the stage through the real `pipeline` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use pipeline_fetch::testserver::{Fault, TestServer};
use pipeline_media::media::decode::{decode_audio_mono, probe};
use serde_json::json;
use sha2::{Digest, Sha256};

mod media_common;

/// The tests set HF_TOKEN and HF_ENDPOINT, which the stage reads from the
/// process environment: one test at a time.
static ENV: Mutex<()> = Mutex::new(());

/// Holds the environment for one test, with neither HF_TOKEN nor
/// HF_ENDPOINT set.
fn hub_env() -> MutexGuard<'static, ()> {
    let g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::remove_var("HF_TOKEN");
    std::env::remove_var("HF_ENDPOINT");
    g
}

const REPO: &str = "owner/vox-test";
const TOKEN: &str = "hf_TestSecretToken0123456789";

/// An m4a (AAC in MP4) of a stereo 44.1 kHz sine, made by the CLI.
fn m4a(dir: &Path, seconds: f64, freq: u32) -> Vec<u8> {
    let path = dir.join(format!("sine-{freq}-{seconds}.m4a"));
    media_common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency={freq}:duration={seconds}"),
        "-ac",
        "2",
        "-ar",
        "44100",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
    std::fs::read(path).unwrap()
}

/// A tar of `(name, bytes)` members; a name is written into the header as
/// it is, `..` included (as a hostile archive would).
fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    // A symlink member, which must be passed over.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_path("id00018/link/00001.m4a").unwrap();
    h.set_link_name("/etc/passwd").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Hub {
    server: TestServer,
    /// Shard path -> its resolve route.
    shards: BTreeMap<String, String>,
}

fn resolve(path: &str) -> String {
    format!("/datasets/{REPO}/resolve/main/{path}")
}

/// Serves `shards` (path -> tar bytes) and the tree listing them beside a
/// README and a folder, which the pattern must leave out.
fn hub(shards: &[(&str, Vec<u8>)]) -> Hub {
    let server = TestServer::start();
    let mut tree = vec![
        json!({"type": "file", "path": "README.md", "size": 5, "oid": "abc"}),
        json!({"type": "directory", "path": "extra", "size": 0, "oid": "def"}),
    ];
    let mut routes = BTreeMap::new();
    for (path, bytes) in shards {
        tree.push(json!({
            "type": "file", "path": path, "size": bytes.len(), "oid": "0123",
            "lfs": {"oid": sha256(bytes), "size": bytes.len(), "pointerSize": 134}
        }));
        server.add(&resolve(path), bytes.clone());
        routes.insert(path.to_string(), resolve(path));
    }
    server.add(&resolve("README.md"), b"hello".to_vec());
    server.add(
        &format!("/api/datasets/{REPO}/tree/main"),
        serde_json::to_vec(&tree).unwrap(),
    );
    Hub {
        server,
        shards: routes,
    }
}

impl Hub {
    /// How often each shard was requested, in path order.
    fn shard_hits(&self) -> Vec<u32> {
        self.shards.values().map(|r| self.server.hits(r)).collect()
    }
}

struct Ws {
    dir: tempfile::TempDir,
    corpus: PathBuf,
}

/// A FakeAVCeleb-shaped folder: two RVRA identities (one under a race
/// folder with spaces and parentheses) and one that is only in FVRA.
fn corpus() -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("FakeAVCeleb");
    for p in [
        "RealVideo-RealAudio/African/men/id00018",
        "RealVideo-RealAudio/Asian (East)/women/id00076",
        "FakeVideo-RealAudio/African/men/id09999",
    ] {
        std::fs::create_dir_all(corpus.join(p)).unwrap();
    }
    Ws { dir, corpus }
}

fn params(endpoint: &str, max_failed: f64) -> serde_json::Value {
    json!({
        "repo": REPO, "revision": "main", "pattern": "voxceleb2-dev-*.tar",
        "sample_rate": 16000, "identities_from": "RealVideo-RealAudio",
        "endpoint": endpoint, "concurrency": 2, "retries": 3,
        "max_failed_fraction": max_failed,
    })
}

/// Runs the stage with the step folder `step-TAG`, the shared items
/// folder and the output `vox2-TAG`.
fn run(ws: &Ws, params: &serde_json::Value, tag: &str) -> (anyhow::Result<()>, PathBuf) {
    let out = ws.dir.path().join(format!("vox2-{tag}"));
    let step = ws.dir.path().join(format!("step-{tag}"));
    let items = ws.dir.path().join("items");
    let r = media_common::run_stage(
        "voxceleb_subset",
        ws.dir.path(),
        params,
        &[("fakeavceleb", &ws.corpus)],
        &[("vox2", &out)],
        (&step, &items),
        2,
    );
    (r, out)
}

/// Every file under `dir`, relative, '/'-separated.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn assert_no_token_under(dir: &Path) {
    for f in files(dir) {
        let bytes = std::fs::read(dir.join(&f)).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "HF_TOKEN written into {f}"
        );
    }
}

#[test]
fn keeps_the_rvra_identities_utterances_from_the_hubs_shards_and_resumes() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let _env = hub_env();
    let ws = corpus();
    let d = ws.dir.path();
    let (a, b, c, e) = (
        m4a(d, 1.5, 300),
        m4a(d, 1.0, 440),
        m4a(d, 2.0, 520),
        m4a(d, 0.5, 660),
    );
    let cls: &[u8] = b"42";
    let shard0 = tar(&[
        ("id00018/yt_A1/00001.m4a", &a),
        ("id00018/yt_A1/00001.cls", cls),
        ("id09999/yt_B2/00001.m4a", &b),
        ("id09999/yt_B2/00001.cls", cls),
        ("id00076/yt-C_d/00002.m4a", &b),
        ("id00076/yt-C_d/00002.cls", cls),
        ("../id00018/evil/00001.m4a", &a),
        ("notes.txt", b"not a member"),
    ]);
    let shard1 = tar(&[
        ("id00018/yt_A1/00002.m4a", &c),
        ("id00018/yt_A1/00002.cls", cls),
        ("id00500/x/00001.m4a", &c),
    ]);
    let shard2 = tar(&[
        ("id00076/yt-C_d/00003.m4a", &e),
        ("id00076/yt-C_d/00004.m4a", b"this is no m4a at all"),
        ("id00076/yt-C_d/00004.cls", cls),
    ]);
    let hub = hub(&[
        ("voxceleb2-dev-0000.tar", shard0),
        ("voxceleb2-dev-0001.tar", shard1),
        ("voxceleb2-dev-0002.tar", shard2),
    ]);
    let route = |i: usize| hub.shards.values().nth(i).unwrap().clone();
    // The first attempt at shard 1 gets a 503, at shard 2 a connection
    // dropped after 1000 bytes: both must still arrive.
    hub.server.fault(
        &route(1),
        Fault::Status {
            code: 503,
            first: 1,
        },
    );
    hub.server.fault(
        &route(2),
        Fault::DropAfter {
            bytes: 1000,
            first: 1,
        },
    );
    std::env::set_var("HF_TOKEN", TOKEN);
    let p = params(&hub.server.base_url(), 0.5);
    let (r, out) = run(&ws, &p, "first");
    r.unwrap();

    let expected = [
        ("id00018/yt_A1/00001.wav", 1.5),
        ("id00018/yt_A1/00002.wav", 2.0),
        ("id00076/yt-C_d/00002.wav", 1.0),
        ("id00076/yt-C_d/00003.wav", 0.5),
    ];
    let mut want: Vec<String> = expected.iter().map(|(k, _)| k.to_string()).collect();
    want.push("index.json".to_string());
    want.sort();
    assert_eq!(files(&out), want);
    for (key, seconds) in expected {
        let wav = out.join(key);
        let info = probe(&wav).unwrap().audio.unwrap();
        assert_eq!((info.sample_rate, info.channels), (16000, 1), "{key}");
        let n = decode_audio_mono(&wav, 16000).unwrap().len();
        let got = n as f64 / 16000.0;
        assert!(
            (got - seconds).abs() <= 0.05,
            "{key}: {got} s, not {seconds} s"
        );
    }
    // Nothing outside the memo folders: the `..` member was refused.
    let items = d.join("items");
    assert!(!items.join("id00018").exists());
    assert!(!d.join("id00018").exists());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["utterances"], 4);
    assert_eq!(index["shards"][2]["failed"], 1, "{index}");
    let failed = std::fs::read_to_string(d.join("step-first/utterances.jsonl")).unwrap();
    assert!(
        failed.contains("id00076/yt-C_d/00004") && failed.contains("\"failed\""),
        "{failed}"
    );
    assert!(!failed.contains(".partial"), "the scratch path: {failed}");
    // One item per shard in the item log, all done.
    let log = std::fs::read_to_string(d.join("step-first/items.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().all(|l| l.contains("\"ok\"")), "{log}");

    let s = &hub.server;
    assert_eq!(s.hits(&route(0)), 1);
    assert_eq!(s.hits(&route(1)), 2, "the 503, then the shard");
    assert!(s.hits(&route(2)) >= 2, "the cut body, then the rest");
    assert!(
        s.requests(&resolve("README.md")).is_empty(),
        "a file outside the pattern was requested"
    );
    let all = s.all_requests();
    assert!(!all.is_empty());
    for r in &all {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.target
        );
    }
    // The downloads are gone once their shard is done; the token is nowhere.
    assert!(
        !files(&items)
            .iter()
            .any(|f| f.ends_with(".tar") || f.ends_with(".part")),
        "{:?}",
        files(&items)
    );
    assert_no_token_under(d);

    // A rerun fetches no shard again and writes the same output.
    let hits: Vec<u32> = (0..3).map(|i| s.hits(&route(i))).collect();
    let (r, again) = run(&ws, &p, "again");
    r.unwrap();
    assert_eq!((0..3).map(|i| s.hits(&route(i))).collect::<Vec<_>>(), hits);
    assert_eq!(files(&again), files(&out));
    for f in files(&out) {
        assert_eq!(
            std::fs::read(out.join(&f)).unwrap(),
            std::fs::read(again.join(&f)).unwrap(),
            "{f}"
        );
    }

    // A crash before shard 0's memo was complete: only shard 0 is fetched again.
    let memo0 = std::fs::read_dir(&items)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("voxceleb2-dev-0000-")
        })
        .unwrap();
    std::fs::remove_file(memo0.join("manifest.json")).unwrap();
    let (r, resumed) = run(&ws, &p, "resumed");
    r.unwrap();
    assert_eq!(s.hits(&route(0)), hits[0] + 1);
    assert_eq!(s.hits(&route(1)), hits[1]);
    assert_eq!(s.hits(&route(2)), hits[2]);
    assert_eq!(files(&resumed), files(&out));

    // Stricter about undecodable utterances: 1 of 5 is too many.
    let (r, _) = run(&ws, &params(&hub.server.base_url(), 0.0), "strict");
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("1 of 5 items failed"), "{e}");
    assert!(e.contains("id00076/yt-C_d/00004"), "{e}");
    assert!(!e.contains(TOKEN), "{e}");
    std::env::remove_var("HF_TOKEN");
}

#[test]
fn hf_endpoint_wins_and_an_unknown_repo_is_named_with_the_endpoint() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let _env = hub_env();
    let ws = corpus();
    let empty = hub(&[]);
    // The parameter points nowhere; HF_ENDPOINT (with a trailing slash) wins.
    std::env::set_var("HF_ENDPOINT", format!("{}/", empty.server.base_url()));
    let mut p = params("http://127.0.0.1:9", 0.05);
    p["repo"] = "owner/no-such-dataset".into();
    let (r, out) = run(&ws, &p, "unknown");
    std::env::remove_var("HF_ENDPOINT");
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("owner/no-such-dataset"), "{e}");
    assert!(e.contains(&empty.server.base_url()), "{e}");
    assert!(e.contains("404"), "{e}");
    assert!(!out.exists());
    let asked = empty.server.all_requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0]
            .target
            .starts_with("/api/datasets/owner/no-such-dataset/tree/main"),
        "{}",
        asked[0].target
    );
    // No authorization without HF_TOKEN.
    assert_eq!(asked[0].header("authorization"), None);

    // A corpus without the category folder is named with what to do.
    std::fs::remove_dir_all(ws.corpus.join("RealVideo-RealAudio")).unwrap();
    let (r, _) = run(&ws, &params(&empty.server.base_url(), 0.05), "nocat");
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("RealVideo-RealAudio"), "{e}");
    assert!(e.contains("identities_from"), "{e}");
}

#[test]
fn a_shard_that_cannot_be_fetched_fails_the_step_and_a_rerun_fetches_only_it() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let _env = hub_env();
    let ws = corpus();
    let d = ws.dir.path();
    let a = m4a(d, 1.0, 300);
    let hub = hub(&[
        (
            "voxceleb2-dev-0000.tar",
            tar(&[("id00018/y/00001.m4a", &a)]),
        ),
        (
            "voxceleb2-dev-0001.tar",
            tar(&[("id00076/z/00001.m4a", &a)]),
        ),
    ]);
    let route1 = resolve("voxceleb2-dev-0001.tar");
    // A 404 is final: no retry helps within the run.
    hub.server.fault(
        &route1,
        Fault::Status {
            code: 404,
            first: 1,
        },
    );
    let p = params(&hub.server.base_url(), 0.05);
    let (r, out) = run(&ws, &p, "first");
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("1 of 2 shards failed"), "{e}");
    assert!(e.contains("voxceleb2-dev-0001.tar"), "{e}");
    assert!(!out.exists());
    let log = std::fs::read_to_string(d.join("step-first/items.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("voxceleb2-dev-0001.tar") && l.contains("\"failed\"")),
        "{log}"
    );
    let (r, out) = run(&ws, &p, "second");
    r.unwrap();
    assert_eq!(hub.server.hits(&resolve("voxceleb2-dev-0000.tar")), 1);
    assert_eq!(hub.server.hits(&route1), 2);
    assert_eq!(
        files(&out),
        ["id00018/y/00001.wav", "id00076/z/00001.wav", "index.json"]
    );
}

#[test]
fn a_changed_identity_set_fetches_only_the_shards_holding_an_identity_their_memo_lacks() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let _env = hub_env();
    let ws = corpus();
    let d = ws.dir.path();
    let rvra_76 = ws
        .corpus
        .join("RealVideo-RealAudio/Asian (East)/women/id00076");
    std::fs::remove_dir(&rvra_76).unwrap();
    let a = m4a(d, 1.0, 300);
    let hub = hub(&[
        (
            "voxceleb2-dev-0000.tar",
            tar(&[("id00018/y/00001.m4a", &a), ("id00076/z/00001.m4a", &a)]),
        ),
        (
            "voxceleb2-dev-0001.tar",
            tar(&[("id00018/y/00002.m4a", &a)]),
        ),
        (
            "voxceleb2-dev-0002.tar",
            tar(&[("id00076/z/00002.m4a", &a)]),
        ),
    ]);
    let hits = || hub.shard_hits();
    let p = params(&hub.server.base_url(), 0.05);

    // Only id00018 is in RVRA: every shard is fetched once.
    let (r, out) = run(&ws, &p, "one");
    r.unwrap();
    assert_eq!(hits(), [1, 1, 1]);
    assert_eq!(
        files(&out),
        ["id00018/y/00001.wav", "id00018/y/00002.wav", "index.json"]
    );

    // id00076 joins: only the shards that hold it are fetched again.
    std::fs::create_dir_all(&rvra_76).unwrap();
    let (r, out) = run(&ws, &p, "two");
    r.unwrap();
    assert_eq!(hits(), [2, 1, 2]);
    assert_eq!(
        files(&out),
        [
            "id00018/y/00001.wav",
            "id00018/y/00002.wav",
            "id00076/z/00001.wav",
            "id00076/z/00002.wav",
            "index.json"
        ]
    );

    // id00018 leaves: nothing is fetched, and its utterances are left out.
    std::fs::remove_dir_all(ws.corpus.join("RealVideo-RealAudio/African")).unwrap();
    let (r, out) = run(&ws, &p, "three");
    r.unwrap();
    assert_eq!(hits(), [2, 1, 2]);
    assert_eq!(
        files(&out),
        ["id00076/z/00001.wav", "id00076/z/00002.wav", "index.json"]
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["utterances"], 2, "{index}");
    assert_eq!(index["identities"], 1, "{index}");
}

/// A workspace whose pipeline runs `voxceleb_subset` on a FakeAVCeleb-shaped
/// folder in it (an identity folder holds a file, as the real ones do) and a
/// command stage that lists the wavs.
fn engine_ws(endpoint: &str) -> EngineWs {
    let yaml = format!(
        "stages:\n  vox:\n    kind: voxceleb_subset\n    params: {{repo: \"{REPO}\", revision: \
         main, pattern: \"voxceleb2-dev-*.tar\", sample_rate: 16000, identities_from: \
         RealVideo-RealAudio, endpoint: \"{endpoint}\", concurrency: 2, retries: 3}}\n    \
         deps: {{fakeavceleb: data/FakeAVCeleb}}\n    outs: {{vox2: data/vox2}}\n    \
         env: [HF_ENDPOINT]\n  list:\n    cmd: cd data/vox2 && find . -name '*.wav' | sort > \
         ../../wavs.txt\n    deps: [data/vox2]\n    outs: [wavs.txt]\n"
    );
    let ws = EngineWs(tempfile::tempdir().unwrap());
    std::fs::write(ws.path("pipeline.yaml"), yaml).unwrap();
    add_identity(&ws, "RealVideo-RealAudio/African/men/id00018");
    add_identity(&ws, "FakeVideo-RealAudio/African/men/id09999");
    ws
}

struct EngineWs(tempfile::TempDir);

impl EngineWs {
    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    /// The real `pipeline`, built beside this crate's program, on this workspace.
    fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(media_common::pipeline_exe());
        c.arg("-f")
            .arg(self.path("pipeline.yaml"))
            .arg("-w")
            .arg(self.0.path());
        c
    }

    /// `pipeline run` with HF_TOKEN set: its output, asserting success.
    fn run(&self) -> String {
        let o = self
            .cmd()
            .arg("run")
            .env("HF_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "pipeline run failed:\n{text}");
        text
    }

    /// A stage's state and reasons, from `pipeline status --json`.
    fn status_of(&self, stage: &str) -> (String, Vec<String>) {
        let o = self.cmd().args(["status", "--json"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let s = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage {stage} in {v}"));
        let why = s["why"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        (s["state"].as_str().unwrap().to_string(), why)
    }
}

/// The stages a `run` started, from its progress lines.
fn ran(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("start"))
        .map(|l| l.trim().split(' ').next().unwrap().to_string())
        .collect()
}

fn add_identity(ws: &EngineWs, rel: &str) {
    let dir = ws.path("data/FakeAVCeleb").join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("00001.mp4"), rel.as_bytes()).unwrap();
}

#[test]
fn through_the_pipeline_binary_the_stage_is_recorded_reruns_nothing_and_follows_the_corpus() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let _env = hub_env();
    let d = tempfile::tempdir().unwrap();
    let a = m4a(d.path(), 1.0, 300);
    let hub = hub(&[
        (
            "voxceleb2-dev-0000.tar",
            tar(&[("id00018/y/00001.m4a", &a), ("id09999/q/00001.m4a", &a)]),
        ),
        (
            "voxceleb2-dev-0001.tar",
            tar(&[("id00076/z/00001.m4a", &a)]),
        ),
    ]);
    let hits = || hub.shard_hits();
    let ws = engine_ws(&hub.server.base_url());

    let out = ws.run();
    assert_eq!(ran(&out), ["vox", "list"], "{out}");
    assert_eq!(
        std::fs::read_to_string(ws.path("wavs.txt")).unwrap(),
        "./id00018/y/00001.wav\n"
    );
    assert_eq!(hits(), [1, 1]);
    let info = probe(&ws.path("data/vox2/id00018/y/00001.wav"))
        .unwrap()
        .audio
        .unwrap();
    assert_eq!((info.sample_rate, info.channels), (16000, 1));
    for r in hub.server.all_requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.target
        );
    }
    // The token reached the hub through the worker, and nothing recorded
    // holds it: not the store, the step logs or the memos.
    assert_no_token_under(ws.0.path());
    assert!(ws.path(".pipeline").is_dir());

    // Nothing changed: nothing runs, nothing is fetched.
    let out = ws.run();
    assert!(ran(&out).is_empty(), "{out}");
    assert_eq!(hits(), [1, 1]);

    // A new real identity in the corpus: the stage is stale for its input,
    // and only the shard that holds the new identity is fetched again.
    add_identity(&ws, "RealVideo-RealAudio/Asian (East)/women/id00076");
    let (state, why) = ws.status_of("vox");
    assert_ne!(state, "up-to-date", "{why:?}");
    assert!(
        why.iter().any(|w| w.contains("data/FakeAVCeleb")),
        "{why:?}"
    );
    let out = ws.run();
    assert_eq!(ran(&out), ["vox", "list"], "{out}");
    assert_eq!(hits(), [1, 2]);
    assert_eq!(
        std::fs::read_to_string(ws.path("wavs.txt")).unwrap(),
        "./id00018/y/00001.wav\n./id00076/z/00001.wav\n"
    );
    assert_no_token_under(ws.0.path());
}
