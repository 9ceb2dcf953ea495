//! The download stage through the real `pipeline` binary: a FakeAVCeleb-
//! shaped zip fetched from a real HTTP server on 127.0.0.1, verified and
//! unpacked into the output; a `local:` folder used in place (the output
//! links to it, and a change in it shows in `verify` and `status`); the
//! messages for a source without a URL and for a folder of the wrong shape.

mod common;
use std::io::Write;
use std::path::Path;

use common::Ws;
use pipeline_fetch::testserver::TestServer;

const CATEGORIES: [&str; 4] = [
    "RealVideo-RealAudio",
    "RealVideo-FakeAudio",
    "FakeVideo-RealAudio",
    "FakeVideo-FakeAudio",
];

/// A tiny FakeAVCeleb-shaped tree: (path, bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![(
        "meta_data.csv".to_string(),
        b"source,target1,target2,method,category,type,race,gender,path,\n".to_vec(),
    )];
    for (i, c) in CATEGORIES.iter().enumerate() {
        v.push((
            format!("{c}/Asian (East)/men/id0000{i}/0000{i}.mp4"),
            format!("video {i}").into_bytes(),
        ));
    }
    v
}

fn zip_bytes(top: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts: zip::write::SimpleFileOptions = Default::default();
    for (p, b) in corpus() {
        z.start_file(format!("{top}/{p}"), opts).unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn write_tree(dir: &Path) {
    for (p, b) in corpus() {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b).unwrap();
    }
}

fn pipeline(source: &str) -> String {
    format!(
        "stages:\n  download:\n    kind: download\n    params:\n      sources:\n        \
         fakeavceleb: {source}\n    outs: {{fakeavceleb: data/FakeAVCeleb}}\n  count:\n    \
         cmd: ls data/FakeAVCeleb/RealVideo-RealAudio > count.txt\n    \
         deps: [data/FakeAVCeleb]\n    outs: [count.txt]\n"
    )
}

#[test]
fn a_zip_from_a_url_is_fetched_verified_unpacked_and_not_fetched_again() {
    let server = TestServer::start();
    let zip = zip_bytes("FakeAVCeleb_v1.2");
    let b3 = blake3::hash(&zip).to_hex().to_string();
    server.add("/FakeAVCeleb_v1.2.zip", zip);
    let url = server.url("/FakeAVCeleb_v1.2.zip");
    let ws = Ws::new(&pipeline(&format!("{{url: \"{url}\", blake3: \"{b3}\"}}")));
    let out = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&out), ["download", "count"], "{out}");
    // The zip's lone top folder is the output.
    for (p, b) in corpus() {
        assert_eq!(
            std::fs::read(ws.path("data/FakeAVCeleb").join(&p)).unwrap(),
            b,
            "{p}"
        );
    }
    assert_eq!(server.hits("/FakeAVCeleb_v1.2.zip"), 1);
    // Its progress, in bytes, for `status` and the run's display.
    let p: serde_json::Value =
        serde_json::from_str(&ws.read(".pipeline/steps/1/progress.json")).unwrap();
    assert_eq!(p["bytes"], true, "{p}");
    assert!(
        p["done"].as_u64().unwrap() > 0 && p["done"] == p["total"],
        "{p}"
    );
    assert!(
        ws.status().iter().all(|s| s.1 == "up_to_date"),
        "{:?}",
        ws.status()
    );

    // Forced again: the verified archive kept in the item folder is reused.
    let again = ws.ok(&["run", "--force", "download"]);
    assert!(Ws::ran(&again).contains(&"download".to_string()), "{again}");
    assert_eq!(server.hits("/FakeAVCeleb_v1.2.zip"), 1);
    assert!(ws.path("data/FakeAVCeleb/meta_data.csv").is_file());

    // A wrong checksum: the stage fails naming the source, the bad file is
    // set aside, and the output from before stays.
    let ws2 = Ws::new(&pipeline(&format!(
        "{{url: \"{url}\", sha256: \"{}\"}}",
        "0".repeat(64)
    )));
    let (code, o, e) = ws2.run(&["run"]);
    assert_ne!(code, 0, "{o}{e}");
    let text = format!("{o}{e}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("source 'fakeavceleb'"), "{text}");
    assert!(ws2
        .path(".pipeline/items/download/fakeavceleb/FakeAVCeleb_v1.2.zip.rejected")
        .is_file());
    assert!(!ws2.path("data/FakeAVCeleb").exists());
}

#[test]
fn a_local_folder_is_linked_hashed_in_place_and_watched() {
    let data = tempfile::tempdir().unwrap();
    let local = data.path().join("FakeAVCeleb_v1.2");
    write_tree(&local);
    let ws = Ws::new(&pipeline(&format!("{{local: \"{}\"}}", local.display())));
    let out = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&out), ["download", "count"], "{out}");
    let link = ws.path("data/FakeAVCeleb");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        local.canonicalize().unwrap()
    );
    assert_eq!(ws.read("count.txt").trim(), "Asian (East)");
    assert!(
        ws.status().iter().all(|s| s.1 == "up_to_date"),
        "{:?}",
        ws.status()
    );
    // The recorded hash is the folder's content, as a copy would hash.
    let copy = tempfile::tempdir().unwrap();
    write_tree(copy.path());
    let want = pipeline::hash::hash_path(copy.path(), None)
        .unwrap()
        .unwrap()
        .0
        .hash;
    let (code, o, _) = ws.run(&["verify", "--json"]);
    assert_eq!(code, 0, "{o}");
    let lineage = ws.ok(&["lineage", "data/FakeAVCeleb"]);
    assert!(lineage.contains(&want.to_hex()[..16]), "{lineage}");

    // A change in the user's folder is a change of the output.
    std::fs::write(local.join("meta_data.csv"), "changed\n").unwrap();
    let (code, o, _) = ws.run(&["verify"]);
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("changed   data/FakeAVCeleb"), "{o}");
    assert!(
        ws.status().iter().any(|s| s.1 != "up_to_date"),
        "{:?}",
        ws.status()
    );
    // The engine replaces the link on a re-run, never the folder behind it.
    ws.ok(&["run"]);
    assert_eq!(
        std::fs::read_to_string(local.join("meta_data.csv")).unwrap(),
        "changed\n"
    );
    assert!(
        ws.status().iter().all(|s| s.1 == "up_to_date"),
        "{:?}",
        ws.status()
    );
}

#[test]
fn a_source_without_a_url_or_of_the_wrong_shape_says_what_to_do() {
    let ws = Ws::new(&pipeline("{url: null, sha256: null}"));
    let (code, o, e) = ws.run(&["run", "--dry-run"]);
    assert_ne!(code, 0);
    let text = format!("{o}{e}");
    assert!(text.contains("stage 'download'"), "{text}");
    assert!(
        text.contains("request form") && text.contains("\"local\""),
        "{text}"
    );

    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("RealVideo-RealAudio")).unwrap();
    let ws = Ws::new(&pipeline(&format!(
        "{{local: \"{}\"}}",
        data.path().display()
    )));
    let (code, o, e) = ws.run(&["run"]);
    assert_ne!(code, 0);
    let text = format!("{o}{e}");
    assert!(text.contains("does not look like FakeAVCeleb"), "{text}");
    assert!(text.contains("meta_data.csv"), "{text}");
    assert!(text.contains("source 'fakeavceleb'"), "{text}");
    assert!(!ws.path("data/FakeAVCeleb").exists());

    // The user's data sitting where the output goes would be replaced: refused.
    let ws = Ws::new(&pipeline("{local: data/FakeAVCeleb}"));
    write_tree(&ws.path("data/FakeAVCeleb"));
    let (code, o, e) = ws.run(&["run"]);
    assert_ne!(code, 0);
    let text = format!("{o}{e}");
    assert!(text.contains("is where the stage's output goes"), "{text}");
    assert!(ws.path("data/FakeAVCeleb/meta_data.csv").is_file());
}

#[test]
fn a_source_named_after_no_output_is_refused_when_the_plan_is_made() {
    let data = tempfile::tempdir().unwrap();
    write_tree(data.path());
    let local = format!("{{local: \"{}\"}}", data.path().display());
    // The source is called `fakeavceleb`, the output `corpus`.
    let yaml = pipeline(&local).replace(
        "outs: {fakeavceleb: data/FakeAVCeleb}",
        "outs: {corpus: data/FakeAVCeleb}",
    );
    let ws = Ws::new(&yaml);
    let (code, o, e) = ws.run(&["run", "--dry-run"]);
    assert_ne!(code, 0, "{o}{e}");
    let text = format!("{o}{e}");
    assert!(text.contains("stage 'download'"), "{text}");
    assert!(
        text.contains("source 'fakeavceleb' names no output of the stage (outputs: corpus)"),
        "{text}"
    );
    // Refused before any step: nothing ran, nothing was linked.
    let (code, o, e) = ws.run(&["run"]);
    assert_ne!(code, 0, "{o}{e}");
    assert!(Ws::ran(&format!("{o}{e}")).is_empty(), "{o}{e}");
    assert!(!ws.path("data/FakeAVCeleb").exists());

    // An output without a source: named, with what to add.
    let two = format!(
        "stages:\n  download:\n    kind: download\n    params:\n      sources:\n        \
         fakeavceleb: {local}\n    outs: {{fakeavceleb: data/FakeAVCeleb, vox: data/vox}}\n"
    );
    let ws = Ws::new(&two);
    let (code, o, e) = ws.run(&["run", "--dry-run"]);
    assert_ne!(code, 0, "{o}{e}");
    let text = format!("{o}{e}");
    assert!(text.contains("output 'vox' has no source"), "{text}");
}
