//! The elements stage run directly with a hand-built StageContext on clips
//! the `ffmpeg` CLI makes: outputs, determinism, the per-item memo, shards,
//! the identity-disjoint split, and every kind of bad media.

mod media_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use media_common::{ffmpeg, require_ffmpeg};
use pipeline_core::stages::{lookup, StageContext};
use serde_json::{json, Value};

const GOOD_IDS: [(&str, &str, &str); 6] = [
    ("African", "men", "id00001"),
    ("African", "men", "id00002"),
    ("African", "men", "id00003"),
    ("Asian (East)", "women", "id00004"),
    ("Asian (East)", "women", "id00005"),
    ("Asian (East)", "women", "id00006"),
];

fn clip(path: &Path, seconds: f64, video: bool, audio: bool, tone: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let d = format!("{seconds}");
    let mut args: Vec<String> = Vec::new();
    if video {
        args.extend(["-f", "lavfi", "-i"].map(String::from));
        args.push(format!("testsrc2=size=80x64:rate=25:duration={d}"));
    }
    if audio {
        args.extend(["-f", "lavfi", "-i"].map(String::from));
        args.push(format!("sine=f={tone}:sample_rate=44100:duration={d}"));
    }
    if video {
        args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p"].map(String::from));
    }
    if audio {
        args.extend(["-c:a", "aac"].map(String::from));
    }
    args.extend(["-f", "mp4"].map(String::from));
    args.push(path.to_str().unwrap().to_string());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A small FakeAVCeleb-shaped tree of good clips (4 categories x 6 ids).
fn corpus(root: &Path) {
    let cats = [
        "RealVideo-RealAudio",
        "RealVideo-FakeAudio",
        "FakeVideo-RealAudio",
        "FakeVideo-FakeAudio",
    ];
    for (c, cat) in cats.iter().enumerate() {
        for (i, (race, gender, id)) in GOOD_IDS.iter().enumerate() {
            let p = root
                .join(cat)
                .join(race)
                .join(gender)
                .join(id)
                .join("00001.mp4");
            clip(
                &p,
                2.0 + (i % 3) as f64,
                true,
                true,
                300 + 50 * (c * 6 + i) as u32,
            );
        }
    }
}

struct Run {
    ws: tempfile::TempDir,
    items: PathBuf,
}

impl Run {
    fn new() -> Run {
        let ws = tempfile::tempdir().unwrap();
        let items = ws.path().join("items");
        Run { ws, items }
    }

    fn run(
        &self,
        input: &Path,
        out: &Path,
        params: &Value,
        shard: Option<(u32, u32)>,
    ) -> anyhow::Result<()> {
        let inputs = BTreeMap::from([("fakeavceleb".to_string(), input.to_path_buf())]);
        let outputs = BTreeMap::from([("elements".to_string(), out.to_path_buf())]);
        let step = self
            .ws
            .path()
            .join(format!("step-{}", shard.map_or(9, |s| s.0)));
        let ctx = StageContext {
            workspace: self.ws.path(),
            stage: "elements",
            params,
            inputs: &inputs,
            input_hashes: &Default::default(),
            outputs: &outputs,
            step_dir: &step,
            items_dir: &self.items,
            shard,
            threads: 2,
            provenance: &[],
        };
        lookup(pipeline_media::stages::registry(), "elements")
            .unwrap()
            .run(&ctx)
    }
}

fn params() -> Value {
    json!({"seed": 7, "frame_size": 32, "clips_per_shard": 10, "max_failed_fraction": 0.5})
}

fn manifest(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn writes_shards_and_manifest_deterministically_with_a_disjoint_split() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    corpus(data.path());
    let a = Run::new();
    let out_a = a.ws.path().join("elements");
    a.run(data.path(), &out_a, &params(), None).unwrap();
    let rows = manifest(&out_a);
    assert_eq!(rows.len(), 24);
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let r0 = &rows[0];
    assert_eq!(r0["category"], "FakeVideo-FakeAudio");
    assert_eq!(
        (r0["audio_fake"].as_bool(), r0["video_fake"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(r0["race"], "African");
    assert_eq!(r0["shard"], "shard-00000.safetensors");
    let rvra: Vec<&Value> = rows
        .iter()
        .filter(|r| r["category"] == "RealVideo-RealAudio")
        .collect();
    assert!(rvra
        .iter()
        .all(|r| r["audio_fake"] == false && r["video_fake"] == false));
    assert!(rows
        .iter()
        .filter(|r| r["category"] == "FakeVideo-RealAudio")
        .all(|r| r["audio_fake"] == false && r["video_fake"] == true));
    // 2.0 s clips are shorter than the window: they start at 0; longer ones may not.
    assert!(rows.iter().any(|r| r["start_frame"].as_u64().unwrap() > 0));
    // The split: identity-disjoint, 2 of 3 per (race, gender) stratum in train.
    let mut split: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &rows {
        split
            .entry(r["identity"].as_str().unwrap())
            .or_default()
            .insert(r["split"].as_str().unwrap());
    }
    assert!(
        split.values().all(|s| s.len() == 1),
        "identity in both splits: {split:?}"
    );
    let train: Vec<&&str> = split
        .iter()
        .filter(|(_, s)| s.contains("train"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(train.len(), 4, "{split:?}");
    // Shards: 10 + 10 + 4 clips with the promised shapes and dtypes.
    let f = files(&out_a);
    assert_eq!(f.len(), 4, "{:?}", f.keys());
    let st = safetensors::SafeTensors::deserialize(&f["shard-00002.safetensors"]).unwrap();
    let mel = st.tensor("mel").unwrap();
    assert_eq!(
        (mel.dtype(), mel.shape()),
        (safetensors::Dtype::F32, &[4usize, 128, 768][..])
    );
    let fr = st.tensor("frames").unwrap();
    assert_eq!(
        (fr.dtype(), fr.shape()),
        (safetensors::Dtype::U8, &[4usize, 16, 32, 32, 3][..])
    );
    // `elements inspect` writes what the model sees for a clip.
    let shown = a.ws.path().join("inspect");
    let key = rows[5]["key"].as_str().unwrap().to_string();
    pipeline_media::stages::elements_inspect::run(
        pipeline_media::stages::elements_inspect::InspectArgs {
            elements: out_a.clone(),
            key: Some(key),
            row: 0,
            out: shown.clone(),
        },
    )
    .unwrap();
    for (name, w, h) in [
        ("frame_00.png", 32, 32),
        ("frame_15.png", 32, 32),
        ("frames.png", 128, 128),
        ("mel.png", 768, 128),
    ] {
        let dec = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(shown.join(name)).unwrap(),
        ));
        let info = dec.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (w, h), "{name}");
    }
    // Same inputs, same seed, fresh memo: the same bytes.
    let b = Run::new();
    let out_b = b.ws.path().join("elements");
    b.run(data.path(), &out_b, &params(), None).unwrap();
    assert!(files(&out_b) == f, "outputs differ between identical runs");
    // Another seed moves the windows.
    let c = Run::new();
    let out_c = c.ws.path().join("elements");
    let mut p = params();
    p["seed"] = json!(8);
    c.run(data.path(), &out_c, &p, None).unwrap();
    assert!(files(&out_c)["shard-00000.safetensors"] != f["shard-00000.safetensors"]);
}

#[test]
fn shards_fill_the_memo_and_the_gathering_run_recomputes_nothing() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    corpus(data.path());
    let r = Run::new();
    let unused = r.ws.path().join("unused");
    r.run(data.path(), &unused, &params(), Some((0, 2)))
        .unwrap();
    assert!(!unused.exists(), "a shard must not write outputs");
    let after_one: Vec<PathBuf> = std::fs::read_dir(&r.items)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(after_one.len(), 12);
    r.run(data.path(), &unused, &params(), Some((1, 2)))
        .unwrap();
    let memo = |dir: &Path| -> BTreeMap<PathBuf, std::time::SystemTime> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().modified().unwrap())
            })
            .collect()
    };
    let before = memo(&r.items);
    assert_eq!(before.len(), 24);
    let out = r.ws.path().join("elements");
    r.run(data.path(), &out, &params(), None).unwrap();
    assert_eq!(
        memo(&r.items),
        before,
        "the gathering run recomputed memoized items"
    );
    // The sharded result equals an unsharded run from scratch.
    let fresh = Run::new();
    let out_f = fresh.ws.path().join("elements");
    fresh.run(data.path(), &out_f, &params(), None).unwrap();
    assert!(files(&out) == files(&out_f));
    // An item interrupted mid-write (a leftover temporary file, no memo) is redone.
    let victim = before.keys().next().unwrap().clone();
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(victim.with_extension("tmp123"), b"partial").unwrap();
    let out2 = r.ws.path().join("elements2");
    r.run(data.path(), &out2, &params(), None).unwrap();
    assert!(victim.exists());
    assert!(files(&out2) == files(&out_f));
}

/// identity -> its part of the split, from a manifest.
fn parts(rows: &[Value]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|r| {
            (
                r["identity"].as_str().unwrap().to_string(),
                r["split"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_fusion_split_is_carved_out_of_the_training_identities() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    corpus(data.path());
    let r = Run::new();
    let plain = r.ws.path().join("plain");
    r.run(data.path(), &plain, &params(), None).unwrap();
    let mut p = params();
    // Of each stratum's 3 identities, 2 train; one of those 2 goes to fusion.
    p["split"] = json!({"fusion_fraction": 0.34});
    let held = r.ws.path().join("held");
    r.run(data.path(), &held, &p, None).unwrap();
    let (before, after) = (parts(&manifest(&plain)), parts(&manifest(&held)));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let count =
        |m: &BTreeMap<String, String>, part: &str| m.values().filter(|v| *v == part).count();
    assert_eq!((count(&before, "train"), count(&before, "fusion")), (4, 0));
    assert_eq!(
        (count(&after, "train"), count(&after, "fusion")),
        (2, 2),
        "{after:?}"
    );
    for (id, part) in &after {
        match part.as_str() {
            // Validation and test are the same identities as without it.
            "val" | "test" => assert_eq!(&before[id], part, "{id}"),
            _ => assert_eq!(before[id], "train", "{id} came from {}", before[id]),
        }
    }
}

#[test]
fn a_split_file_replaces_the_seeded_split() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    for (race, gender, id) in &GOOD_IDS[..2] {
        clip(
            &data
                .path()
                .join("RealVideo-RealAudio")
                .join(race)
                .join(gender)
                .join(id)
                .join("a.mp4"),
            1.5,
            true,
            true,
            440,
        );
    }
    let r = Run::new();
    std::fs::write(
        r.ws.path().join("split.json"),
        r#"{"train": ["id00002"], "val": ["id00001"]}"#,
    )
    .unwrap();
    let mut p = params();
    p["split"] = json!({"file": "split.json"});
    let out = r.ws.path().join("elements");
    r.run(data.path(), &out, &p, None).unwrap();
    let rows = manifest(&out);
    assert_eq!(rows[0]["identity"], "id00001");
    assert_eq!(rows[0]["split"], "val");
    assert_eq!(rows[1]["split"], "train");
    std::fs::write(
        r.ws.path().join("split.json"),
        r#"{"train": ["id00002"], "val": []}"#,
    )
    .unwrap();
    let err = r
        .run(data.path(), &r.ws.path().join("e2"), &p, None)
        .unwrap_err();
    assert!(format!("{err:#}").contains("id00001"), "{err:#}");
}

#[test]
fn bad_media_fails_its_item_only_and_the_fraction_decides_the_stage() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    corpus(data.path());
    let dir = data
        .path()
        .join("RealVideo-RealAudio/Caucasian (European)/women/id00009");
    std::fs::create_dir_all(&dir).unwrap();
    // Truncated: the first half of a good file (its index at the end is lost).
    clip(&dir.join("plain.mp4"), 2.0, true, true, 500);
    let mut moov_last = std::fs::read(dir.join("plain.mp4")).unwrap();
    moov_last.truncate(moov_last.len() / 2);
    std::fs::write(dir.join("truncated.mp4"), &moov_last).unwrap();
    std::fs::remove_file(dir.join("plain.mp4")).unwrap();
    std::fs::write(
        dir.join("corrupt.mp4"),
        (0..20_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(dir.join("empty.mp4"), b"").unwrap();
    clip(&dir.join("noaudio.mp4"), 2.0, true, false, 0);
    clip(&dir.join("novideo.mp4"), 2.0, false, true, 600);
    clip(&dir.join("short.mp4"), 0.4, true, true, 700);
    // Damaged in the middle (the container still opens): decoded as far as
    // possible or failed with a reason, never a panic.
    let mut damaged = std::fs::read(
        data.path()
            .join("RealVideo-RealAudio/African/men/id00002/00001.mp4"),
    )
    .unwrap();
    let mid = damaged.len() / 2;
    for (i, b) in damaged[mid..mid + 2000].iter_mut().enumerate() {
        *b = (i * 31 % 256) as u8;
    }
    let damaged_dir = data
        .path()
        .join("RealVideo-FakeAudio/Caucasian (European)/women/id00009");
    std::fs::create_dir_all(&damaged_dir).unwrap();
    std::fs::write(damaged_dir.join("damaged.mp4"), &damaged).unwrap();
    let r = Run::new();
    let out = r.ws.path().join("elements");
    r.run(data.path(), &out, &params(), None).unwrap();
    let rows = manifest(&out);
    let damaged_ok = rows
        .iter()
        .any(|r| r["key"].as_str().unwrap().ends_with("damaged.mp4"));
    assert_eq!(
        rows.len(),
        24 + usize::from(damaged_ok),
        "only the good clips are elements"
    );
    let log = std::fs::read_to_string(r.ws.path().join("step-9/items.jsonl")).unwrap();
    let failed: BTreeMap<String, String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| {
            v["status"] == "failed" && !v["item"].as_str().unwrap().ends_with("damaged.mp4")
        })
        .map(|v| {
            (
                v["item"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    println!("{failed:#?}");
    assert_eq!(failed.len(), 6, "{failed:?}");
    assert!(failed["empty.mp4"].contains("empty"));
    assert!(failed["noaudio.mp4"].contains("no audio stream"));
    assert!(failed["novideo.mp4"].contains("no video stream"));
    assert!(failed["short.mp4"].contains("shorter than the minimum"));
    assert!(failed["corrupt.mp4"].contains("cannot open"));
    assert!(failed["truncated.mp4"].contains("truncated.mp4"));
    // 6 (or 7) of 31 failed: about 20%, over a 10% limit, and the message says so.
    let mut p = params();
    p["max_failed_fraction"] = json!(0.1);
    let strict = Run::new();
    let err = strict
        .run(data.path(), &strict.ws.path().join("e"), &p, None)
        .unwrap_err();
    let msg = format!("{err:#}");
    let n_failed = if damaged_ok { 6 } else { 7 };
    assert!(
        msg.contains(&format!("{n_failed} of 31 items failed")),
        "{msg}"
    );
}

/// The first 60% of a 5 s clip in `format` (`-f`), whose index sits before
/// its data, so FFmpeg still opens the cut copy.
fn truncated_clip(path: &Path, format: &str) {
    let whole = path.with_extension("whole");
    let index_first: &[&str] = if format == "mp4" {
        &["-movflags", "+faststart"]
    } else {
        &[]
    };
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=80x64:rate=25:duration=5",
        "-f",
        "lavfi",
        "-i",
        "sine=f=550:sample_rate=44100:duration=5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(index_first);
    args.extend(["-f", format, whole.to_str().unwrap()]);
    ffmpeg(&args);
    let mut bytes = std::fs::read(&whole).unwrap();
    bytes.truncate(bytes.len() * 6 / 10);
    std::fs::write(path, bytes).unwrap();
    std::fs::remove_file(whole).unwrap();
}

#[test]
fn a_truncated_file_that_still_opens_fails_its_item_with_the_reason() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    corpus(data.path());
    let dir = data
        .path()
        .join("RealVideo-RealAudio/Caucasian (European)/women/id00009");
    std::fs::create_dir_all(&dir).unwrap();
    truncated_clip(&dir.join("faststart.mp4"), "mp4");
    // FFmpeg reads the content, not the name: a Matroska file cut short.
    truncated_clip(&dir.join("matroska.mp4"), "matroska");
    let r = Run::new();
    let out = r.ws.path().join("elements");
    r.run(data.path(), &out, &params(), None).unwrap();
    let rows = manifest(&out);
    assert_eq!(rows.len(), 24, "only the intact clips are elements");
    assert!(rows.iter().all(|r| r["identity"] != "id00009"));
    let log = std::fs::read_to_string(r.ws.path().join("step-9/items.jsonl")).unwrap();
    let failed: BTreeMap<String, String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["status"] == "failed")
        .map(|v| {
            let item = v["item"].as_str().unwrap();
            (
                item.rsplit('/').next().unwrap().to_string(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    println!("{failed:#?}");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed["faststart.mp4"].contains("truncated: read")
            && failed["faststart.mp4"].contains("video packets the container indexes"),
        "{failed:?}"
    );
    assert!(
        failed["matroska.mp4"].contains("truncated: read")
            && failed["matroska.mp4"].contains("the container declares"),
        "{failed:?}"
    );
}

fn clip_mel(dir: &Path, row: &Value) -> Vec<u8> {
    let bytes = std::fs::read(dir.join(row["shard"].as_str().unwrap())).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = 128 * 768 * 4;
    let i = row["index"].as_u64().unwrap() as usize;
    st.tensor("mel").unwrap().data()[i * n..(i + 1) * n].to_vec()
}

#[test]
fn several_clips_per_video_get_their_own_windows_and_keys() {
    if !require_ffmpeg() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (race, gender, id) = GOOD_IDS[0];
    clip(
        &data
            .path()
            .join("RealVideo-RealAudio")
            .join(race)
            .join(gender)
            .join(id)
            .join("long.mp4"),
        8.0,
        true,
        true,
        440,
    );
    let one = Run::new();
    let out1 = one.ws.path().join("e1");
    one.run(data.path(), &out1, &params(), None).unwrap();
    let three = Run::new();
    let out3 = three.ws.path().join("e3");
    let mut p = params();
    p["clips_per_video"] = json!(3);
    p["clips_per_shard"] = json!(2);
    three.run(data.path(), &out3, &p, None).unwrap();
    let rows1 = manifest(&out1);
    let rows3 = manifest(&out3);
    assert_eq!(rows3.len(), 3);
    let key = rows1[0]["key"].as_str().unwrap();
    for (j, r) in rows3.iter().enumerate() {
        assert_eq!(r["key"].as_str().unwrap(), format!("{key}#{j}"));
    }
    assert_eq!(
        (rows3[2]["shard"].as_str(), rows3[2]["index"].as_u64()),
        (Some("shard-00001.safetensors"), Some(0))
    );
    // The first clip is the one-clip run's clip; the others start elsewhere.
    assert_eq!(rows3[0]["start_frame"], rows1[0]["start_frame"]);
    assert_eq!(clip_mel(&out3, &rows3[0]), clip_mel(&out1, &rows1[0]));
    let starts: BTreeSet<u64> = rows3
        .iter()
        .map(|r| r["start_frame"].as_u64().unwrap())
        .collect();
    assert_eq!(starts.len(), 3, "{rows3:?}");
}
