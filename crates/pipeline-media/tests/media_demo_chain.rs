//! The demo chain synth -> seedvc -> elements with the demo profile's
//! parameters (fewer identities), through the real subprocess path: the
//! seedvc command template calls `{pipeline} vc-standin`, and this test
//! binary, being `{pipeline}` here, answers it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use clap::Parser;
use pipeline_media::stages::vc_standin::{run as vc_standin, VcStandinArgs};
use serde_json::Value;

#[derive(Parser)]
struct StandIn {
    #[command(flatten)]
    args: VcStandinArgs,
}

fn profile(stage: &str) -> Value {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join(format!("config/demo/{stage}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

mod media_common;

fn run(ws: &Path, stage: &str, params: &Value, inputs: &[(&str, &str)], outputs: &[(&str, &str)]) {
    let join = |v: &[(&str, &str)]| -> Vec<(String, std::path::PathBuf)> {
        v.iter().map(|(k, p)| (k.to_string(), ws.join(p))).collect()
    };
    let (inputs, outputs) = (join(inputs), join(outputs));
    fn refs(v: &[(String, std::path::PathBuf)]) -> Vec<(&str, &Path)> {
        v.iter().map(|(k, p)| (k.as_str(), p.as_path())).collect()
    }
    let (step, items) = (
        ws.join(format!(".steps/{stage}")),
        ws.join(format!(".items/{stage}")),
    );
    let t = Instant::now();
    media_common::run_stage(
        stage,
        ws,
        params,
        &refs(&inputs),
        &refs(&outputs),
        (&step, &items),
        2,
    )
    .unwrap_or_else(|e| panic!("{stage}: {e:#}"));
    println!("{stage}: {:.1} s", t.elapsed().as_secs_f64());
}

fn chain() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    let mut synth = profile("synth");
    synth["identities"] = 5.into();
    run(
        ws,
        "synth",
        &synth,
        &[],
        &[("fakeavceleb", "data/FakeAVCeleb"), ("vox2", "data/vox2")],
    );
    run(
        ws,
        "seedvc",
        &profile("seedvc"),
        &[("fakeavceleb", "data/FakeAVCeleb"), ("vox2", "data/vox2")],
        &[("voiceclone", "data/voiceclone")],
    );
    run(
        ws,
        "elements",
        &profile("elements"),
        &[
            ("fakeavceleb", "data/FakeAVCeleb"),
            ("voiceclone", "data/voiceclone"),
        ],
        &[("elements", "data/elements")],
    );
    let manifest = std::fs::read_to_string(ws.join("data/elements/manifest.jsonl")).unwrap();
    let rows: Vec<Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows.len(),
        30,
        "5 identities x (4 categories + 2 voice clones)"
    );
    let mut per_category: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_category
            .entry(r["category"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_category.len(), 6, "{per_category:?}");
    assert!(per_category.values().all(|&n| n == 5), "{per_category:?}");
    for r in rows
        .iter()
        .filter(|r| r["category"].as_str().unwrap().contains("VoiceClone"))
    {
        assert_eq!(
            (r["audio_fake"].as_bool(), r["video_fake"].as_bool()),
            (Some(true), Some(true))
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("vc-standin") {
        let cli = StandIn::parse_from(args[1..].iter());
        if let Err(e) = vc_standin(cli.args) {
            eprintln!("vc-standin: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo test` may pass a filter or --nocapture; there is one test here.
    if args.iter().skip(1).any(|a| a == "--list") {
        println!("demo_chain: test");
        return;
    }
    chain();
    println!("test demo_chain ... ok");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
