//! `pipeline bench`: programs that print numbers (never timed assertions).
//!
//! - `bench status`: a no-op `pipeline status` over a workspace whose outputs
//!   hold N files of 1 KiB, each stat'ed against the stat cache, in folders
//!   of 1,000 and all in one folder.
//! - `bench hash`: BLAKE3 throughput on one large file, next to `b3sum`.
//! - `bench startup`: wall time and peak memory of short commands (`--help`,
//!   and `status`, `dag`, `lineage` on a workspace when given one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Training steps of a stage's network: ms per step and peak memory
    /// (`bench models --help`; runs in pipeline-worker).
    #[command(disable_help_flag = true)]
    Models {
        /// The arguments of `bench models` (see `bench models --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Element extraction: clips per second beside the ffmpeg CLI's decode
    /// floor (`bench elements --help`; runs in pipeline-media).
    #[command(disable_help_flag = true)]
    Elements {
        /// The arguments of `bench elements` (see `bench elements --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// No-op `pipeline status` over outputs holding N files of 1 KiB.
    Status {
        /// How many files of 1 KiB the outputs hold.
        #[arg(long, default_value_t = 100_000)]
        files: usize,
        /// Timed runs per case (the median is printed).
        #[arg(long, default_value_t = 7)]
        repeat: usize,
        /// Folder for the benchmark workspace (default: a fresh one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How the files lie: nested (folders of 1,000), flat (all in one
        /// folder, as a stage's output often is) or both.
        #[arg(long, value_enum, default_value = "both")]
        layout: Layout,
    },
    /// Start-up: wall time and peak resident memory of `pipeline --help` and,
    /// with `-w` naming a workspace, of `status`, `dag` and `lineage` on it.
    Startup {
        /// Runs per command (the median is printed).
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// The artifact whose lineage to ask for.
        #[arg(long, default_value = "models/stage2")]
        artifact: String,
    },
    /// BLAKE3 throughput on one file of N MiB, next to `b3sum`.
    Hash {
        /// The file's size in MiB.
        #[arg(long, default_value_t = 2048)]
        mib: u64,
        /// Timed runs (the best is printed).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Where to write the file (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    Nested,
    Flat,
    Both,
}

pub async fn run(a: &BenchArgs, workspace: &Path, file: &Path, profile: &str) -> Result<i32> {
    match &a.what {
        What::Models { args } => Err(bench_in("pipeline-worker", "models", args)),
        What::Elements { args } => Err(bench_in("pipeline-media", "elements", args)),
        What::Status {
            files,
            repeat,
            dir,
            layout,
        } => {
            for (case, per_dir) in [(Layout::Nested, Some(1000)), (Layout::Flat, None)] {
                if *layout == case || *layout == Layout::Both {
                    bench_status(*files, per_dir, *repeat, dir.as_deref())?;
                }
            }
            Ok(0)
        }
        What::Hash { mib, repeat, dir } => bench_hash(*mib, *repeat, dir.as_deref()),
        What::Startup { repeat, artifact } => {
            bench_startup(*repeat, workspace, file, profile, artifact)
        }
    }
}

/// Replaces this process with `program bench what ARGS`.
fn bench_in(program: &str, what: &str, args: &[std::ffi::OsString]) -> anyhow::Error {
    let mut all = vec![std::ffi::OsString::from(what)];
    all.extend(args.iter().cloned());
    super::forward(program, "bench", &all)
}

/// Runs `exe args` once; returns its wall seconds and peak RSS in MiB.
fn timed_run(exe: &Path, args: &[&str]) -> Result<(f64, f64)> {
    let t = Instant::now();
    let child = Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: pid is our child, not yet reaped; both out-pointers are valid.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!(
            "waiting for {}: {}",
            exe.display(),
            std::io::Error::last_os_error()
        );
    }
    let wall = t.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "`{} {}` failed (wait status {status})",
            exe.display(),
            args.join(" ")
        );
    }
    Ok((wall, usage.ru_maxrss as f64 / 1024.0))
}

fn bench_startup(
    repeat: usize,
    workspace: &Path,
    file: &Path,
    profile: &str,
    artifact: &str,
) -> Result<i32> {
    let exe = std::env::current_exe()?;
    let ws = workspace.to_string_lossy().to_string();
    let file = file.to_string_lossy().to_string();
    let mut cases: Vec<Vec<&str>> = vec![vec!["--help"]];
    if workspace.join(".pipeline").is_dir() {
        let global = ["-f", &file, "-w", &ws, "--profile", profile];
        for cmd in [&["status"][..], &["dag"], &["lineage", artifact]] {
            cases.push(global.iter().chain(cmd).copied().collect());
        }
    } else {
        eprintln!(
            "bench startup: {} is not a workspace; timing --help only (give -w WORKSPACE)",
            workspace.display()
        );
    }
    for args in &cases {
        let mut walls = Vec::new();
        let mut rss: f64 = 0.0;
        for _ in 0..repeat.max(1) {
            let (w, r) = timed_run(&exe, args)?;
            walls.push(w * 1000.0);
            rss = rss.max(r);
        }
        let best = walls.iter().cloned().fold(f64::MAX, f64::min);
        let med = median(&mut walls);
        println!(
            "`pipeline {}`: median {med:.1} ms, best {best:.1} ms, peak RSS {rss:.1} MiB ({repeat} runs)",
            args.join(" ")
        );
    }
    Ok(0)
}

fn scratch(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let d = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("pipeline-bench-{name}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One case of `bench status`: `files` files of 1 KiB in folders of
/// `per_dir` (`None`: all in one folder).
fn bench_status(
    files: usize,
    per_dir: Option<usize>,
    repeat: usize,
    dir: Option<&Path>,
) -> Result<()> {
    let layout = match per_dir {
        Some(n) => format!("in folders of {n}"),
        None => "in one folder".to_string(),
    };
    let case = if per_dir.is_some() {
        "status"
    } else {
        "status-flat"
    };
    // Each case in a workspace of its own, under --dir when given.
    let ws = scratch(dir.map(|d| d.join(case)).as_deref(), case)?;
    let exe = std::env::current_exe()?;
    let data = ws.join("data/files");
    eprintln!(
        "bench status: writing {files} files of 1 KiB {layout} under {}",
        data.display()
    );
    std::fs::create_dir_all(&data)?;
    for i in 0..files {
        let (d, name) = match per_dir {
            Some(n) => (
                data.join(format!("d{:04}", i / n)),
                format!("f{:05}", i % n),
            ),
            None => (data.clone(), format!("f{i:06}")),
        };
        if per_dir.is_some_and(|n| i % n == 0) {
            std::fs::create_dir_all(&d)?;
        }
        let mut buf = vec![b'x'; 1024];
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(d.join(name), &buf)?;
    }
    std::fs::write(
        ws.join("bench.yaml"),
        "stages:\n  make:\n    cmd: \"true\"\n    outs:\n      - data/files: {persist: true}\n  \
         count:\n    cmd: ls data/files | wc -l > count.txt\n    deps: [data/files]\n    outs: [count.txt]\n",
    )?;
    let pipeline = |args: &[&str]| {
        Command::new(&exe)
            .arg("-f")
            .arg(ws.join("bench.yaml"))
            .arg("-w")
            .arg(&ws)
            .args(args)
            .output()
    };
    let t = Instant::now();
    let out = pipeline(&["run"])?;
    if !out.status.success() {
        bail!(
            "the benchmark pipeline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "bench status: first run (hashes every file) took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let out = pipeline(&["status", "--json"])?;
        times.push(t.elapsed().as_secs_f64());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let all_ok = v["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["state"] == "up_to_date");
        if !all_ok {
            bail!("status found stale stages in an unchanged workspace: {v}");
        }
    }
    let best = times.iter().cloned().fold(f64::MAX, f64::min);
    let med = median(&mut times);
    println!("no-op `pipeline status` over {files} files {layout} (each stat'ed): median {med:.3} s, best {best:.3} s over {repeat} runs");
    if dir.is_none() {
        let _ = std::fs::remove_dir_all(&ws);
    }
    Ok(())
}

fn bench_hash(mib: u64, repeat: usize, dir: Option<&Path>) -> Result<i32> {
    let d = scratch(dir, "hash")?;
    let f = d.join("big.bin");
    let size = mib * 1024 * 1024;
    if std::fs::metadata(&f).map(|m| m.len()).ok() != Some(size) {
        eprintln!("bench hash: writing {mib} MiB to {}", f.display());
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&f)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for c in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            w.write_all(&block)?;
        }
        w.flush()?;
    }
    // Warm the page cache so both tools read from memory.
    let ours_hash = pipeline::hash::hash_file(&f, size)?;
    let mut ours = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let h = pipeline::hash::hash_file(&f, size)?;
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(h, ours_hash);
    }
    let ours_med = median(&mut ours);
    let gib = size as f64 / (1u64 << 30) as f64;
    println!(
        "pipeline hash: {mib} MiB in {ours_med:.3} s (median of {repeat}) = {:.2} GiB/s",
        gib / ours_med
    );
    let mut theirs = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        match Command::new("b3sum").arg("--no-names").arg(&f).output() {
            Ok(o) if o.status.success() => {
                theirs.push(t.elapsed().as_secs_f64());
                let hex = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if hex != ours_hash.to_hex().as_str() {
                    bail!("b3sum disagrees: {hex} vs {}", ours_hash.to_hex());
                }
            }
            _ => {
                println!("b3sum: not available (apt-get install b3sum), no comparison");
                return Ok(0);
            }
        }
    }
    let theirs_med = median(&mut theirs);
    println!(
        "b3sum:         {mib} MiB in {theirs_med:.3} s (median of {repeat}) = {:.2} GiB/s; pipeline reaches {:.0} % of b3sum (same hash)",
        gib / theirs_med,
        100.0 * theirs_med / ours_med
    );
    if dir.is_none() {
        let _ = std::fs::remove_dir_all(&d);
    }
    Ok(0)
}
