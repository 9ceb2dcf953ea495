//! The demo DAG end to end at toy size (5 identities), with the shipped
//! manifests: synth -> seedvc -> elements -> baseline, stage 1, stage 2, the
//! sweep, the shortcut audit and the report.
//!
//! - Locally: the report opens in headless Chromium (it renders, shows the
//!   AUC of `metrics.json`, every image loads), `pipeline report` finds it, a
//!   second run does nothing, a stage-2 hyperparameter reruns stage 2 and the
//!   report only, `verify` passes and the stage-2 model's lineage reaches the
//!   synth seed.
//! - Through a real one-node Slurm, from nothing: synth, seedvc and elements
//!   as array jobs (4 and 8 shards) gathered on the head, the sweep as an
//!   array of 2, ending with the same artifacts as a local run, the report's
//!   bytes included.
#[path = "../../../tests/common/mod.rs"]
mod common;
mod tiny_demo;

use std::path::Path;

use common::Ws;
use tiny_demo::tiny_demo;

/// The demo DAG's stages, by their shipped manifests.
const STAGES: [&str; 9] = [
    "synth", "seedvc", "elements", "baseline", "stage1", "stage2", "sweep", "audit", "report",
];

/// The identities synth makes of the tiny profile's five.
const IDS: [&str; 5] = ["id00100", "id00101", "id00102", "id00103", "id00104"];

/// The toy demo workspace, with a cluster profile for the Slurm run.
///
/// Five identities are too few for the profile's split fractions to leave a
/// validation or a test part (they round per race and gender, one identity
/// each), and `run` refuses to submit a model stage to Slurm whose
/// validation split is empty or of one class, so this corpus gets a split
/// file: two identities train, one validates, two test.
fn demo_ws() -> Ws {
    let ws = tiny_demo(&STAGES, |stage, v| {
        if stage == "elements" {
            v["split"] = serde_json::json!({"file": "split.json"});
        }
    });
    ws.write(
        "split.json",
        &serde_json::json!({"train": IDS[..2], "val": IDS[2..3], "test": IDS[3..]}).to_string(),
    );
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.5\npoll_max_s: 2\nresult_wait_s: 10\nmax_gpus: 0\nmax_mem: 2G\n",
    );
    ws
}

fn hash(ws: &Ws, rel: &str) -> String {
    let (h, _) = pipeline_core::hash::hash_path(&ws.path(rel), None)
        .unwrap()
        .expect("artifact exists");
    h.hash.to_hex().to_string()
}

#[test]
fn the_demo_chain_through_slurm_matches_a_local_run() {
    if !common::slurm_cluster() {
        return;
    }
    let local = demo_ws();
    local.ok(&["--profile", "tiny", "run"]);
    let slurm = demo_ws();
    let cluster_file = slurm.path("cluster.yaml");
    let out = slurm.ok(&[
        "--profile",
        "tiny",
        "run",
        "--executor",
        "slurm",
        "--cluster",
        cluster_file.to_str().unwrap(),
    ]);
    assert!(
        out.contains("seedvc: every shard finished; gathering here"),
        "{out}"
    );
    assert!(
        out.contains("elements: every shard finished; gathering here"),
        "{out}"
    );
    assert!(
        out.contains("sweep: every shard finished; gathering here"),
        "{out}"
    );
    for artifact in [
        "data/FakeAVCeleb",
        "data/vox2",
        "data/voiceclone",
        "data/elements",
    ] {
        assert_eq!(
            hash(&slurm, artifact),
            hash(&local, artifact),
            "{artifact} differs between Slurm and local runs"
        );
    }
    // Training on the CPU is deterministic for a given thread count (the
    // stages' 2 CPUs, here and in the job): the same bytes, the model
    // folders as a whole (the epochs' seconds stay in the step folders).
    for file in [
        "models/stage1/metrics.json",
        "models/stage2/metrics.json",
        "models/sweep/summary.json",
        "models/baseline",
        "models/stage1",
        "models/stage2",
        "models/sweep",
        "reports/audit",
        "reports/avdfd/report.md",
        "reports/avdfd",
    ] {
        let shown = |ws: &Ws| match file.ends_with(".json") || file.ends_with(".md") {
            true => ws.read(file),
            false => String::new(),
        };
        assert_eq!(
            hash(&slurm, file),
            hash(&local, file),
            "{file} differs between Slurm and local runs:\n{}\n{}",
            shown(&slurm),
            shown(&local)
        );
    }
    let (code, out, err) = slurm.run(&["--profile", "tiny", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["state"], "up_to_date", "{s}");
    }
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["last_step"]["executor"], "slurm", "{s}");
    }
    // Eight element shards ran as tasks of one array job.
    let step = v["stages"][2]["last_step"]["step"].as_i64().unwrap();
    for i in 0..8 {
        assert!(slurm
            .path(&format!(".pipeline/steps/{step}/result.shard-{i}.json"))
            .exists());
    }
}

/// Headless Chromium (Debian's `chromium`), or `None` (having said so) where
/// there is none; CI fails loudly.
fn chromium() -> Option<String> {
    let exe = std::env::var("PIPELINE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::process::Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Some(exe),
        false if std::env::var_os("CI").is_some() => {
            panic!("{exe} is missing: scripts/test.sh installs Debian's chromium")
        }
        false => {
            eprintln!("SKIPPED: the report's page test: no {exe}; run scripts/test.sh");
            None
        }
    }
}

/// Opens `page` in headless Chromium with a script appended that counts the
/// images that decoded, and returns the DOM after the load event.
fn rendered_dom(chromium: &str, page: &Path, scratch: &Path) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let probe = "<script>window.addEventListener('load',()=>{const i=[...document.images];\
                 const ok=i.filter(x=>x.complete&&x.naturalWidth>0).length;\
                 const d=document.createElement('div');d.id='image-check';\
                 d.textContent=ok+' of '+i.length+' images loaded';\
                 document.body.appendChild(d);});</script></body>";
    let copy = scratch.join("probe.html");
    std::fs::write(&copy, html.replace("</body>", probe)).unwrap();
    let o = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
        ])
        .arg("--dump-dom")
        .arg(format!("file://{}", copy.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_demo_dag_runs_end_to_end_to_its_report() {
    let ws = demo_ws();
    // The split file names the identities synth makes.
    ws.ok(&["--profile", "tiny", "run", "--until", "synth"]);
    let mut ids: Vec<String> = Vec::new();
    for race in std::fs::read_dir(ws.path("data/FakeAVCeleb/RealVideo-RealAudio")).unwrap() {
        for gender in std::fs::read_dir(race.unwrap().path()).unwrap() {
            for id in std::fs::read_dir(gender.unwrap().path()).unwrap() {
                ids.push(id.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
    }
    ids.sort();
    assert_eq!(ids, IDS);
    let out = ws.ok(&["--profile", "tiny", "run", "--until", "report"]);
    let ran = Ws::ran(&out);
    for s in [
        "seedvc", "elements", "baseline", "stage1", "stage2", "audit", "report",
    ] {
        assert!(ran.contains(&s.to_string()), "{s} did not run:\n{out}");
    }
    assert!(!ran.contains(&"sweep".to_string()), "{out}");

    // The page: self-contained, and what it shows is what metrics.json says.
    let page = ws.path("reports/avdfd/index.html");
    let html = ws.read("reports/avdfd/index.html");
    assert!(
        !html.contains("src=\"http"),
        "the page loads something from the network"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&ws.read("models/stage2/metrics.json")).unwrap();
    let baseline: serde_json::Value =
        serde_json::from_str(&ws.read("models/baseline/metrics.json")).unwrap();
    let auc = |m: &serde_json::Value, score: &str| {
        format!(
            "{:.3}",
            m["test"]["overall"][score]["auc"].as_f64().unwrap()
        )
    };
    let md = ws.read("reports/avdfd/report.md");
    let pngs = std::fs::read_dir(ws.path("reports/avdfd/plots"))
        .unwrap()
        .count();
    assert!(pngs >= 6, "{pngs} figures");
    if let Some(chromium) = chromium() {
        let dom = rendered_dom(&chromium, &page, ws.root());
        let n_img = html.matches("<img ").count();
        assert_eq!(n_img, pngs, "every figure is on the page");
        assert!(
            dom.contains(&format!(
                "id=\"image-check\">{n_img} of {n_img} images loaded"
            )),
            "not every image loaded: {}",
            dom.split("image-check").nth(1).unwrap_or("no probe output")
        );
        for (m, score, label) in [
            (&metrics, "final", "stage 2 fused"),
            (&metrics, "audio", "stage 2 audio-only"),
            (&metrics, "a2v", "stage 2 A2V-only"),
            (&baseline, "final", "baseline (OpenAVFF)"),
        ] {
            let row = format!("<td>{label}</td><td>{}</td>", auc(m, score));
            assert!(dom.contains(&row), "the page does not show {row}");
            assert!(
                md.contains(&format!("| {label} | {} |", auc(m, score))),
                "{md}"
            );
        }
        assert!(dom.contains("<h2>Lineage</h2>") && dom.contains("<td>synth</td>"));
    }
    let (code, shown, err) = ws.run(&["--profile", "tiny", "report"]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains(&page.display().to_string()), "{shown}");
    assert!(!err.contains("stale"), "{err}");
    let (_, shown_md, _) = ws.run(&["--profile", "tiny", "report", "--markdown"]);
    assert_eq!(shown_md, md);

    // Nothing changed: nothing runs.
    let again = ws.ok(&["--profile", "tiny", "run", "--until", "report"]);
    assert!(Ws::ran(&again).is_empty(), "{again}");

    // One stage-2 hyperparameter: stage 2 and the report rerun, nothing else.
    let cfg = ws.path("cfg/tiny/stage2.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let lr = v["recipe"]["lr"].as_f64().unwrap();
    v["recipe"]["lr"] = (lr * 0.5).into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let (_, _, err) = ws.run(&["--profile", "tiny", "report"]);
    assert!(err.contains("the report is not up to date"), "{err}");
    let after = ws.ok(&["--profile", "tiny", "run", "--until", "report"]);
    assert_eq!(Ws::ran(&after), ["stage2", "report"], "{after}");

    ws.ok(&["--profile", "tiny", "verify"]);

    // The stage-2 model's lineage reaches the corpus generator and its seed.
    let (code, json, err) = ws.run(&["--profile", "tiny", "lineage", "models/stage2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let l: serde_json::Value = serde_json::from_str(&json).unwrap();
    let synth = find_step(&l["root"], "synth").expect("synth in the lineage of models/stage2");
    assert!(synth["params"]["seed"].is_u64(), "{synth}");
}

/// The first step of `stage` in a lineage tree.
fn find_step<'a>(node: &'a serde_json::Value, stage: &str) -> Option<&'a serde_json::Value> {
    let step = node.get("produced_by")?;
    if step["stage"] == stage {
        return Some(step);
    }
    step["artifacts"]
        .as_array()?
        .iter()
        .find_map(|a| find_step(a, stage))
}
