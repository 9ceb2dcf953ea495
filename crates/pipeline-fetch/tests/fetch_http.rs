//! Downloads against a real HTTP server on 127.0.0.1 (the crate's
//! `testserver`): resume after a dropped connection, checksum mismatch,
//! 404, 503, a slow server, a file already there, the bearer token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;
use common::listing;

use pipeline_fetch::testserver::{Fault, TestServer};
use pipeline_fetch::{Checksum, Http, HttpOptions};
use sha2::Digest;

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha(bytes: &[u8]) -> Checksum {
    Checksum::Sha256(hex::encode(sha2::Sha256::digest(bytes)))
}

fn quick(retries: u32, read_timeout: Duration) -> Http {
    Http::new(HttpOptions {
        retries,
        backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(5),
        read_timeout,
        bearer_token: None,
    })
    .unwrap()
}

fn none(_: u64, _: Option<u64>) {}

#[test]
fn a_dropped_connection_resumes_with_a_range_request_and_verifies() {
    let server = TestServer::start();
    let data = body(300_000);
    server.add("/f.bin", data.clone());
    server.fault(
        "/f.bin",
        Fault::DropAfter {
            bytes: 100_000,
            first: 1,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let last = AtomicU64::new(0);
    let got = quick(3, Duration::from_secs(5))
        .download(
            &server.url("/f.bin"),
            &dest,
            Some(&sha(&data)),
            &|done, total| {
                assert_eq!(total, Some(300_000));
                last.store(done, Ordering::SeqCst);
            },
        )
        .unwrap();
    assert!(got.fetched);
    assert_eq!(got.bytes, 300_000);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(last.load(Ordering::SeqCst), 300_000);
    let reqs = server.requests("/f.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[1].header("range"), Some("bytes=100000-"));
    assert_eq!(listing(dir.path()), ["f.bin"]);
}

#[test]
fn a_part_file_left_by_a_crash_is_resumed_and_a_server_ignoring_range_restarts_it() {
    let server = TestServer::start();
    let data = body(50_000);
    server.add("/r.bin", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r.bin");
    std::fs::write(dir.path().join("r.bin.part"), &data[..20_000]).unwrap();
    let got = quick(1, Duration::from_secs(5))
        .download(&server.url("/r.bin"), &dest, Some(&sha(&data)), &none)
        .unwrap();
    assert_eq!(got.resumed_from, 20_000);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        server.requests("/r.bin")[0].header("range"),
        Some("bytes=20000-")
    );

    // A server that answers 200 to a range: the part is rewritten from 0.
    server.add("/n.bin", data.clone());
    server.fault("/n.bin", Fault::IgnoreRange { first: 9 });
    let dest = dir.path().join("n.bin");
    std::fs::write(dir.path().join("n.bin.part"), vec![0xEEu8; 30_000]).unwrap();
    quick(1, Duration::from_secs(5))
        .download(&server.url("/n.bin"), &dest, Some(&sha(&data)), &none)
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(server.hits("/n.bin"), 1);
}

#[test]
fn a_wrong_checksum_sets_the_bad_file_aside_and_leaves_good_data_alone() {
    let server = TestServer::start();
    server.add("/c.bin", body(10_000));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c.bin");
    std::fs::write(&dest, b"the good data from before").unwrap();
    let wanted = "0".repeat(64);
    let e = quick(1, Duration::from_secs(5))
        .download(
            &server.url("/c.bin"),
            &dest,
            Some(&Checksum::Sha256(wanted.clone())),
            &none,
        )
        .unwrap_err();
    let e = format!("{e:#}");
    let actual = hex::encode(sha2::Sha256::digest(body(10_000)));
    assert!(e.contains("checksum mismatch"), "{e}");
    assert!(e.contains(&wanted) && e.contains(&actual), "{e}");
    assert!(e.contains("c.bin.rejected"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"the good data from before");
    assert_eq!(
        std::fs::read(dir.path().join("c.bin.rejected")).unwrap(),
        body(10_000)
    );
    assert_eq!(listing(dir.path()), ["c.bin", "c.bin.rejected"]);
}

#[test]
fn not_found_fails_at_once_and_503_is_retried() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    server.add("/gone", body(10));
    server.fault(
        "/gone",
        Fault::Status {
            code: 404,
            first: 99,
        },
    );
    let url = server.url("/gone");
    let e = quick(5, Duration::from_secs(5))
        .download(&url, &dir.path().join("gone"), None, &none)
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("404") && e.contains(&url), "{e}");
    assert_eq!(server.hits("/gone"), 1);
    assert!(!dir.path().join("gone").exists());

    let data = body(5000);
    server.add("/busy", data.clone());
    server.fault(
        "/busy",
        Fault::Status {
            code: 503,
            first: 2,
        },
    );
    let got = quick(5, Duration::from_secs(5))
        .download(
            &server.url("/busy"),
            &dir.path().join("busy"),
            Some(&sha(&data)),
            &none,
        )
        .unwrap();
    assert_eq!(got.bytes, 5000);
    assert_eq!(server.hits("/busy"), 3);

    // Retries are bounded: 1 + 2 attempts, then the last error.
    server.add("/down", data.clone());
    server.fault(
        "/down",
        Fault::Status {
            code: 503,
            first: 99,
        },
    );
    let e = quick(2, Duration::from_secs(5))
        .download(&server.url("/down"), &dir.path().join("down"), None, &none)
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("giving up after 3 attempts") && e.contains("503"),
        "{e}"
    );
    assert_eq!(server.hits("/down"), 3);
}

#[test]
fn a_slow_server_times_out_and_is_retried_a_bounded_number_of_times() {
    let server = TestServer::start();
    let data = body(4000);
    server.add("/slow", data.clone());
    server.fault(
        "/slow",
        Fault::Slow {
            chunk: 1000,
            delay: Duration::from_millis(1500),
            first: 2,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    // Two slow answers, then a quick one: the third attempt gets it all.
    let got = quick(2, Duration::from_millis(300))
        .download(
            &server.url("/slow"),
            &dir.path().join("slow"),
            Some(&sha(&data)),
            &none,
        )
        .unwrap();
    assert_eq!(got.bytes, 4000);
    assert_eq!(server.hits("/slow"), 3);

    server.add("/slower", data.clone());
    server.fault(
        "/slower",
        Fault::Slow {
            chunk: 1000,
            delay: Duration::from_millis(1500),
            first: 99,
        },
    );
    let started = std::time::Instant::now();
    let e = quick(1, Duration::from_millis(300))
        .download(
            &server.url("/slower"),
            &dir.path().join("slower"),
            None,
            &none,
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("giving up after 2 attempts"), "{e}");
    assert!(e.contains("timed out") || e.contains("broke off"), "{e}");
    assert_eq!(server.hits("/slower"), 2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_file_already_there_and_verified_is_not_fetched_again() {
    let server = TestServer::start();
    let data = body(2000);
    server.add("/d.bin", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d.bin");
    let http = quick(1, Duration::from_secs(5));
    assert!(
        http.download(&server.url("/d.bin"), &dest, Some(&sha(&data)), &none)
            .unwrap()
            .fetched
    );
    assert_eq!(server.hits("/d.bin"), 1);
    let again = http
        .download(&server.url("/d.bin"), &dest, Some(&sha(&data)), &none)
        .unwrap();
    assert!(!again.fetched);
    assert_eq!(again.bytes, 2000);
    assert_eq!(server.hits("/d.bin"), 1);
    // A damaged copy does not verify: it is fetched anew.
    std::fs::write(&dest, b"damaged").unwrap();
    let b3 = Checksum::Blake3(blake3::hash(&data).to_hex().to_string());
    assert!(
        http.download(&server.url("/d.bin"), &dest, Some(&b3), &none)
            .unwrap()
            .fetched
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(server.hits("/d.bin"), 2);
}

#[test]
fn the_bearer_token_is_sent_and_json_pages_carry_their_link() {
    let server = TestServer::start();
    server.add_with_headers(
        "/api/x",
        r#"{"n": 1}"#,
        &[("Link", "<http://elsewhere/next>; rel=\"next\"")],
    );
    let http = Http::new(HttpOptions {
        bearer_token: Some("hf_test_token".into()),
        ..HttpOptions::default()
    })
    .unwrap();
    #[derive(Debug, serde::Deserialize)]
    struct N {
        n: u32,
    }
    let (v, link): (N, _) = http.get_json_page(&server.url("/api/x")).unwrap();
    assert_eq!(v.n, 1);
    assert_eq!(
        link.as_deref(),
        Some("<http://elsewhere/next>; rel=\"next\"")
    );
    assert_eq!(
        server.requests("/api/x")[0].header("authorization"),
        Some("Bearer hf_test_token")
    );
    let e = format!(
        "{:#}",
        http.get_json::<N>(&server.url("/nothing")).unwrap_err()
    );
    assert!(e.contains("404") && !e.contains("hf_test_token"), "{e}");
}
