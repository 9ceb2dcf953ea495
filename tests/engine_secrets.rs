//! A declared environment variable's value (a token) never reaches the
//! store, the step folders, `status` or `lineage`: only a keyed hash of it
//! does, and a change is named without values.

mod common;
use common::Ws;

const TOKEN: &str = "secret-XYZ-4711";
const OTHER: &str = "other-token-0815";

const ONE: &str = "stages:\n  fetch:\n    cmd: test -n \"$HF_TOKEN\" && echo fetched > out.txt\n    outs: [out.txt]\n    env: [HF_TOKEN]\n";

fn with_token(ws: &Ws, token: &str, args: &[&str]) -> String {
    let o = ws.cmd().args(args).env("HF_TOKEN", token).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under the workspace's state folder that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_holding(&p, needle, found);
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(p.display().to_string());
        }
    }
}

fn assert_nowhere(ws: &Ws, needle: &str) {
    let mut found = Vec::new();
    files_holding(ws.root(), needle, &mut found);
    assert!(found.is_empty(), "{needle} is stored in {found:?}");
}

#[test]
fn a_token_is_hashed_everywhere_and_its_change_named_without_values() {
    let ws = Ws::new(ONE);
    with_token(&ws, TOKEN, &["run"]);
    assert_eq!(ws.read("out.txt"), "fetched\n");
    let status = with_token(&ws, TOKEN, &["status"]);
    assert!(status.contains("up to date"), "{status}");

    let status = with_token(&ws, OTHER, &["status"]);
    assert!(status.contains("environment HF_TOKEN changed"), "{status}");
    let json = with_token(&ws, OTHER, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stages"][0]["why"][0], "environment HF_TOKEN changed");
    let lineage = with_token(&ws, OTHER, &["lineage", "out.txt"]);
    assert!(
        lineage.contains("HF_TOKEN"),
        "lineage names the variable: {lineage}"
    );
    for text in [&status, &json, &lineage] {
        assert!(!text.contains(TOKEN) && !text.contains(OTHER), "{text}");
    }
    with_token(&ws, OTHER, &["run"]);
    assert_nowhere(&ws, TOKEN);
    assert_nowhere(&ws, OTHER);
}

/// A store written before values were hashed holds the value itself, in
/// `env_json` and inside the step's key: opening the workspace rewrites the
/// value as its hash, and the step stays up to date while the value is the
/// same (the key is checked against its older form too).
#[test]
fn a_value_recorded_by_an_older_version_is_hashed_in_place_and_nothing_reruns() {
    use pipeline::engine::fingerprint::Fingerprint;
    use std::collections::BTreeMap;
    let ws = Ws::new(ONE);
    with_token(&ws, TOKEN, &["run"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts =
            sqlx::sqlite::SqliteConnectOptions::new().filename(ws.path(".pipeline/state.db"));
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let (key, stage, kind, code, command, params, outs, env): (
            String,
            String,
            String,
            String,
            Option<String>,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT fingerprint, stage, kind, code_version, command, params_json, outs_json, \
             env_json FROM steps",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let mut fp = Fingerprint {
            stage,
            kind,
            code_version: code,
            command,
            params: serde_json::from_str(&params).unwrap(),
            inputs: vec![],
            outs: serde_json::from_str(&outs).unwrap(),
            env: serde_json::from_str(&env).unwrap(),
        };
        assert_eq!(fp.key(), key, "the key is rebuilt from the row");
        fp.env = BTreeMap::from([("HF_TOKEN".to_string(), Some(TOKEN.to_string()))]);
        sqlx::query("UPDATE steps SET env_json = ?, fingerprint = ?")
            .bind(serde_json::to_string(&fp.env).unwrap())
            .bind(fp.key())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let status = with_token(&ws, TOKEN, &["status"]);
    assert!(status.contains("up to date"), "{status}");
    let run = with_token(&ws, TOKEN, &["run"]);
    assert!(run.contains("0 ran"), "{run}");
    assert_nowhere(&ws, TOKEN);
    let status = with_token(&ws, OTHER, &["status"]);
    assert!(status.contains("environment HF_TOKEN changed"), "{status}");
}

/// A command that prints its token, to stdout and stderr, and then fails with
/// the token in the failure the head prints: the step's log holds the name
/// in its place, and no file of the workspace holds the value.
#[test]
fn a_printed_token_is_redacted_in_the_log() {
    let ws = Ws::new(
        "stages:\n  leak:\n    cmd: echo \"using $HF_TOKEN\"; echo \"err $HF_TOKEN\" >&2; echo \"$DB_PASSWORD\"; exit 3\n    outs: [out.txt]\n    env: [HF_TOKEN]\n",
    );
    let o = ws
        .cmd()
        .arg("run")
        .env("HF_TOKEN", TOKEN)
        .env("DB_PASSWORD", OTHER)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !printed.contains(TOKEN) && !printed.contains(OTHER),
        "{printed}"
    );
    let log = ws.read(".pipeline/steps/1/log");
    assert!(log.contains("using [redacted HF_TOKEN]"), "{log}");
    assert!(log.contains("err [redacted HF_TOKEN]"), "{log}");
    assert!(log.contains("[redacted DB_PASSWORD]"), "{log}");
    assert!(log.contains("exited with status 3"), "{log}");
    assert_nowhere(&ws, TOKEN);
    assert_nowhere(&ws, OTHER);
}
