//! Archives made on the spot: a normal zip unpacks; a zip with a `../`
//! entry or an absolute one, and tars with a link, are refused with nothing
//! written outside the destination; the hub's file listing follows pages.

use std::io::Write;
use std::path::Path;

mod common;
use common::listing;

use pipeline_fetch::testserver::TestServer;
use pipeline_fetch::{extract_tar, extract_zip, hub, Http, HttpOptions};

fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts: zip::write::SimpleFileOptions = Default::default();
    for (name, bytes) in entries {
        if name.ends_with('/') {
            z.add_directory(*name, opts).unwrap();
        } else {
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
    }
    z.finish().unwrap();
}

#[test]
fn a_normal_zip_is_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let z = tmp.path().join("a.zip");
    zip_of(
        &z,
        &[
            ("top/", b""),
            ("top/meta_data.csv", b"source,target1\n"),
            ("top/Asian (East)/men/id00001/00001.mp4", b"video"),
        ],
    );
    let dest = tmp.path().join("out");
    assert_eq!(extract_zip(&z, &dest).unwrap(), 2);
    assert_eq!(
        std::fs::read(dest.join("top/Asian (East)/men/id00001/00001.mp4")).unwrap(),
        b"video"
    );
    assert_eq!(listing(&dest), ["top"]);
}

#[test]
fn zip_entries_that_escape_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("p");
    std::fs::create_dir(&parent).unwrap();
    let dest = parent.join("dest");
    let z = tmp.path().join("up.zip");
    zip_of(&z, &[("fine.txt", b"ok"), ("../evil", b"x")]);
    let e = format!("{:#}", extract_zip(&z, &dest).unwrap_err());
    assert!(e.contains("../evil") && e.contains("climbs out"), "{e}");
    assert_eq!(listing(&parent), Vec::<String>::new());

    let abs_target = tmp.path().join("abs_evil");
    let name = abs_target.to_str().unwrap().to_string();
    let z = tmp.path().join("abs.zip");
    zip_of(&z, &[("fine.txt", b"ok"), (&name, b"x")]);
    let e = format!("{:#}", extract_zip(&z, &dest).unwrap_err());
    assert!(e.contains("absolute path"), "{e}");
    assert!(!abs_target.exists());
    assert_eq!(listing(&parent), Vec::<String>::new());
    assert_eq!(listing(tmp.path()), ["abs.zip", "p", "up.zip"]);
}

#[test]
fn a_tar_with_a_link_is_refused_and_a_plain_one_unpacks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "a/b.txt", &b"abc"[..]).unwrap();
    let plain = b.into_inner().unwrap();
    let dest = tmp.path().join("plain");
    assert_eq!(extract_tar(&plain[..], &dest).unwrap(), 1);
    assert_eq!(std::fs::read(dest.join("a/b.txt")).unwrap(), b"abc");

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_cksum();
    b.append_link(&mut h, "escape", "/etc").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_cksum();
    b.append_data(&mut h, "escape/passwd", &b"x"[..]).unwrap();
    let linked = b.into_inner().unwrap();
    let dest = tmp.path().join("linked");
    let e = format!("{:#}", extract_tar(&linked[..], &dest).unwrap_err());
    assert!(e.contains("entry escape is a link"), "{e}");
    assert_eq!(listing(&dest), Vec::<String>::new());

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_cksum();
    b.append_link(&mut h, "hard", "a/b.txt").unwrap();
    let e = format!(
        "{:#}",
        extract_tar(&b.into_inner().unwrap()[..], &tmp.path().join("hard")).unwrap_err()
    );
    assert!(e.contains("entry hard is a link"), "{e}");
}

#[test]
fn the_hub_listing_follows_pages_and_filters_by_pattern() {
    let server = TestServer::start();
    let next = server.url("/api/datasets/o/r/tree/main?recursive=true&cursor=2");
    server.add_with_headers(
        "/api/datasets/o/r/tree/main?recursive=true",
        r#"[{"type":"directory","path":"sub","oid":"1","size":0},
            {"type":"file","path":"x-0001.tar","oid":"a","size":10,
             "lfs":{"oid":"ABCD","size":10,"pointerSize":130}},
            {"type":"file","path":"README.md","oid":"b","size":5}]"#,
        &[("Link", &format!("<{next}>; rel=\"next\""))],
    );
    server.add(
        "/api/datasets/o/r/tree/main?recursive=true&cursor=2",
        r#"[{"type":"file","path":"x-0000.tar","oid":"c","size":7}]"#,
    );
    let http = Http::new(HttpOptions::default()).unwrap();
    let files =
        hub::list_dataset_files(&http, &server.base_url(), "o/r", "main", "x-*.tar").unwrap();
    assert_eq!(
        files,
        vec![
            hub::HubFile {
                path: "x-0000.tar".into(),
                size: 7,
                sha256: None
            },
            hub::HubFile {
                path: "x-0001.tar".into(),
                size: 10,
                sha256: Some("abcd".into())
            },
        ]
    );
    assert_eq!(server.all_requests().len(), 2);
}
