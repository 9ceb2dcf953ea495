//! `pipeline exec-step`: runs one step as a job, wherever it was sent.
//!
//! Built-in stages write into a staging folder inside the step's folder; only
//! after the stage returns `Ok` are the outputs moved into place (a rename on
//! the same file system). Command stages write in place, as DVC's do: their
//! declared outputs are removed first (unless `persist`), so a crashed command
//! leaves nothing that could pass for a result. Either way the result file is
//! written last, atomically, and the head records nothing before reading it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::confine;
use super::job::step_dir;
use super::job::{
    read_job, record_start, result_name, JobAction, JobResult, JobSpec, OutputResult, PID_FILE,
};
use super::redact;
use crate::exec::job::StepId;
use crate::hash::{self, statcache};
use crate::stages::{self, Stage, StageContext};
use crate::util::{hostname, now_ms, write_atomic};

/// Set when Slurm warns of the job's end (`--signal=B:USR1@90`). Training
/// checkpoints every epoch, so the warning needs no action beyond not dying
/// of it: the job goes on until it ends or is requeued.
pub static END_WARNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    END_WARNING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The built-in kinds a program implements: `pipeline-media`'s media kinds,
/// `pipeline-worker`'s model kinds, none for `pipeline` itself.
pub type Registry = fn() -> Vec<Box<dyn Stage>>;

/// `kinds` of a program: the kinds its `registry` implements with their
/// versions, as JSON (what the test that compares the programs reads).
pub fn kinds_json(registry: Registry) -> Result<String> {
    let rows: Vec<_> = registry()
        .iter()
        .map(|s| serde_json::json!({"kind": s.kind(), "version": s.version()}))
        .collect();
    Ok(serde_json::to_string_pretty(&rows)?)
}

/// Ends a program (`pipeline-media`, `pipeline-worker`) with `result`'s
/// exit code, or with its error on stderr and code 1.
pub fn exit_with(result: Result<i32>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs step `id` of the workspace at `root` (or only its shard `shard`);
/// returns the process exit code. Everything the job writes passes the
/// secret filter ([`redact`]). A step of a kind that `registry` lacks is
/// handed over to the program of its kind (`pipeline-media`,
/// `pipeline-worker`): this process becomes that program (the same pid, log
/// and Slurm job).
pub fn exec_step(root: &Path, id: StepId, shard: Option<u32>, registry: Registry) -> Result<i32> {
    let handover = hand_over(root, id, shard, registry).err();
    let capture = redact::capture();
    let redactor = capture.redactor.clone();
    let result = exec_step_inner(root, id, shard, registry, handover, &redactor);
    capture.finish();
    result.map_err(|e| anyhow::anyhow!(redactor.text(&format!("{e:#}"))))
}

/// Execs `PROGRAM exec-step` for a step of a kind that another program runs;
/// returns `Ok` for any other step (and never returns when the hand-over
/// works).
fn hand_over(root: &Path, id: StepId, shard: Option<u32>, registry: Registry) -> Result<()> {
    let Ok(job) = read_job(&step_dir(root, id)) else {
        return Ok(()); // told with the step's own error below
    };
    let JobAction::Builtin { kind } = &job.action else {
        return Ok(());
    };
    let Some(program) = stages::kind_info(kind).and_then(|k| k.home.program()) else {
        return Ok(());
    };
    if registry().iter().any(|s| s.kind() == kind) {
        return Ok(());
    }
    let mut args: Vec<std::ffi::OsString> =
        vec!["exec-step".into(), root.into(), id.0.to_string().into()];
    if let Some(i) = shard {
        args.extend(["--shard".into(), i.to_string().into()]);
    }
    Err(exec_program(program, &args).context(format!("stage kind {kind}")))
}

/// `program` (`pipeline-media`, `pipeline-worker`) beside this program, or
/// why it cannot be used.
pub fn program_exe(program: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this program")?;
    let exe = me.with_file_name(program);
    if !exe.is_file() {
        bail!(
            "{program} is not beside {}: build every program of the workspace \
             (`cargo build --release --workspace`; scripts/demo.sh does)",
            me.display()
        );
    }
    Ok(exe)
}

/// Replaces this process with `program ARGS`; returns only when that fails.
pub fn exec_program(program: &str, args: &[std::ffi::OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    match program_exe(program) {
        Ok(w) => {
            let e = Command::new(&w).args(args).exec();
            anyhow::Error::new(e).context(format!("starting {}", w.display()))
        }
        Err(e) => e,
    }
}

/// This program's file name, for messages.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "this program".into())
}

fn exec_step_inner(
    root: &Path,
    id: StepId,
    shard: Option<u32>,
    registry: Registry,
    handover: Option<anyhow::Error>,
    redactor: &redact::Redactor,
) -> Result<i32> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
    // a caught (not ignored) signal is reset to its default in exec'd children.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let step = step_dir(root, id);
    let mut job = read_job(&step)?;
    // A shard works in a folder of its own (its log of items, its pid) and
    // writes its own result file into the step's folder.
    let dir = match shard {
        None => step.clone(),
        Some(i) => {
            let n = job
                .shards
                .filter(|n| i < *n)
                .with_context(|| format!("step {id} ({}) has no shard {i}", job.stage))?;
            job.shard = Some((i, n));
            let d = step.join(format!("shard-{i}"));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
    };
    let result_file = step.join(result_name(shard));
    let _ = std::fs::remove_file(&result_file);
    // The head records this pid too, but it may die before it does: the file
    // lets the next head re-attach instead of starting a second copy.
    let me = std::process::id();
    let start = crate::util::process_start(me).unwrap_or(0);
    let host = hostname();
    write_atomic(
        &dir.join(PID_FILE),
        format!("{me} {start} {host}\n").as_bytes(),
    )?;
    record_start(&dir, me, start, &host)?;
    let started_at = now_ms();
    let outcome = match handover {
        Some(e) => Err(e),
        None => run_job(root, &dir, &job, registry),
    };
    let dir = step;
    let (succeeded, exit_code, error, outputs) = match outcome {
        Ok(RunOutcome::Exited(0)) => match hash_outputs(root, &dir, &job) {
            Ok(outs) => (true, Some(0), None, outs),
            Err(e) => (false, Some(0), Some(format!("{e:#}")), Vec::new()),
        },
        Ok(RunOutcome::Exited(code)) => (
            false,
            Some(code),
            Some(format!("the command exited with status {code}")),
            Vec::new(),
        ),
        Ok(RunOutcome::Signalled(sig)) => (
            false,
            None,
            Some(format!("the command was killed by signal {sig}")),
            Vec::new(),
        ),
        Err(e) => (false, Some(1), Some(format!("{e:#}")), Vec::new()),
    };
    let error = match error {
        Some(e) if !succeeded => Some(match out_of_space(root, &dir, &job) {
            Some(why) => format!("{why} (the step failed with: {e})"),
            None => e,
        }),
        other => other,
    };
    let error = error.map(|e| redactor.text(&e));
    if let Some(e) = &error {
        eprintln!("pipeline: stage {} failed: {e}", job.stage);
    }
    let result = JobResult {
        succeeded,
        exit_code,
        error,
        started_at,
        finished_at: now_ms(),
        peak_rss_kb: peak_rss_kb(),
        host: hostname(),
        outputs,
    };
    write_atomic(&result_file, &serde_json::to_vec_pretty(&result)?)?;
    Ok(if succeeded {
        0
    } else {
        exit_code.filter(|c| *c != 0).unwrap_or(1)
    })
}

enum RunOutcome {
    Exited(i32),
    Signalled(i32),
}

fn run_job(root: &Path, dir: &Path, job: &JobSpec, registry: Registry) -> Result<RunOutcome> {
    // Before anything is deleted or written: where the outputs really are.
    let allowed = confine::allowed_roots(root)?;
    for o in &job.outputs {
        confine::check_writable(root, &allowed, &job.stage, "output", o.path.as_str())?;
    }
    if let JobAction::Command { wdir: Some(w), .. } = &job.action {
        confine::check_writable(root, &allowed, &job.stage, "wdir", w)?;
    }
    match &job.action {
        JobAction::Command { cmd, wdir } => {
            // A shard writes its share under PIPELINE_ITEMS_DIR; only the
            // gathering run replaces the declared outputs.
            if job.shard.is_none() {
                for o in job.outputs.iter().filter(|o| !o.persist) {
                    remove(&root.join(&o.path))?;
                }
            }
            for o in &job.outputs {
                if let Some(parent) = root.join(&o.path).parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
            }
            let cwd = match wdir {
                Some(w) => root.join(w),
                None => root.to_path_buf(),
            };
            let status = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&cwd)
                .env("PIPELINE_WORKSPACE", root)
                .env("PIPELINE_STAGE", &job.stage)
                .env("PIPELINE_STEP_DIR", dir)
                .env("PIPELINE_PARAMS", job.params.to_string())
                .env("PIPELINE_ITEMS_DIR", items_dir(root, &job.stage)?)
                .env_remove("PIPELINE_SHARD")
                .env_remove("PIPELINE_SHARDS")
                .envs(
                    job.shard
                        .map(|(i, n)| {
                            [
                                ("PIPELINE_SHARD", i.to_string()),
                                ("PIPELINE_SHARDS", n.to_string()),
                            ]
                        })
                        .into_iter()
                        .flatten(),
                )
                .status()
                .with_context(|| format!("starting `sh -c` in {}", cwd.display()))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(match (status.code(), status.signal()) {
                (Some(c), _) => RunOutcome::Exited(c),
                (None, Some(s)) => RunOutcome::Signalled(s),
                (None, None) => RunOutcome::Exited(1),
            })
        }
        JobAction::Builtin { kind } => {
            let stage = stages::lookup(registry(), kind)?;
            // The engine planned the step with its own table's version; a
            // worker from another build would record output of other code.
            if let Some(r) = &job.record {
                let mine = format!("{kind}@{}", stage.version());
                if r.code_version != mine {
                    bail!(
                        "this program implements {mine} but the step was planned as {}: \
                         pipeline and {} come from different builds; rebuild them all \
                         (`cargo build --release --workspace`)",
                        r.code_version,
                        program_name()
                    );
                }
            }
            let staging = dir.join("staging");
            remove(&staging)?;
            let mut outputs = BTreeMap::new();
            for o in &job.outputs {
                let p = staging.join(&o.path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                outputs.insert(o.name.clone(), p);
            }
            let inputs: BTreeMap<String, PathBuf> = job
                .inputs
                .iter()
                .map(|(n, p)| (n.clone(), root.join(p)))
                .collect();
            let items_dir = items_dir(root, &job.stage)?;
            let ctx = StageContext {
                workspace: root,
                stage: &job.stage,
                params: &job.params,
                inputs: &inputs,
                input_hashes: &job.input_hashes,
                outputs: &outputs,
                step_dir: dir,
                items_dir: &items_dir,
                shard: job.shard,
                threads: job.threads,
                provenance: &job.provenance,
            };
            stage.run(&ctx)?;
            if job.shard.is_none() {
                for o in &job.outputs {
                    let staged = &outputs[&o.name];
                    if !staged.exists() {
                        bail!(
                            "stage {} ({kind}) finished without writing its output '{}'",
                            job.stage,
                            o.name
                        );
                    }
                    let target = root.join(&o.path);
                    remove(&target)?;
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::rename(staged, &target)
                        .with_context(|| format!("moving {} into place", target.display()))?;
                }
            }
            remove(&staging)?;
            Ok(RunOutcome::Exited(0))
        }
    }
}

fn hash_outputs(root: &Path, dir: &Path, job: &JobSpec) -> Result<Vec<OutputResult>> {
    if job.shard.is_some() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, o) in job.outputs.iter().enumerate() {
        let abs = root.join(&o.path);
        let Some((h, _)) = hash::hash_path(&abs, None)? else {
            bail!(
                "output '{}' does not exist after the stage ran: the stage must write every declared output",
                o.path
            );
        };
        let entries_file = format!("out-{i}.bin");
        write_atomic(
            &dir.join(&entries_file),
            &statcache::encode_stat(&h.entries),
        )?;
        out.push(OutputResult {
            name: o.name.clone(),
            path: o.path.clone(),
            hash: h.hash.to_hex().to_string(),
            size: h.size,
            is_dir: h.is_dir,
            file_count: h.file_count(),
            entries_file,
        });
    }
    Ok(out)
}

/// The per-item memo folder of `stage`, shared by all its steps and shards.
fn items_dir(root: &Path, stage: &str) -> Result<PathBuf> {
    let d = root.join(".pipeline").join("items").join(stage);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
    }
}

/// Free and total bytes of the file system holding `path`.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a properly sized buffer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    let unit = st.f_frsize as u64;
    (rc == 0).then(|| (st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// When a failed step's file system is full: says where and how much the
/// step had written, and removes its partial outputs (a staging folder, a
/// command's declared outputs), which frees the space for its result file
/// and for the store to record the failure.
fn out_of_space(root: &Path, step: &Path, job: &JobSpec) -> Option<String> {
    let mut places = vec![root.to_path_buf()];
    for o in &job.outputs {
        let mut p = root.join(&o.path);
        while !p.is_dir() {
            match p.parent() {
                Some(q) => p = q.to_path_buf(),
                None => break,
            }
        }
        places.push(p);
    }
    let (place, free, total) = places
        .iter()
        .filter_map(|p| fs_space(p).map(|(f, t)| (p, f, t)))
        .min_by_key(|(_, f, _)| *f)?;
    if free >= (1 << 20).max(total / 1000) {
        return None;
    }
    let mut partial = vec![step.join("staging")];
    if matches!(job.action, JobAction::Command { .. }) && job.shard.is_none() {
        partial.extend(
            job.outputs
                .iter()
                .filter(|o| !o.persist)
                .map(|o| root.join(&o.path)),
        );
    }
    let written: u64 = partial.iter().map(|p| crate::util::bytes_under(p)).sum();
    for p in &partial {
        let _ = remove(p);
    }
    Some(format!(
        "no space left on device at {} ({} free of {}): the step had written {} of its \
         outputs when the space ran out, so it needs more than that; its partial outputs were \
         removed. Free space there and run again",
        place.display(),
        crate::util::human_bytes(free),
        crate::util::human_bytes(total),
        crate::util::human_bytes(written)
    ))
}

fn peak_rss_kb() -> Option<i64> {
    let get = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        (unsafe { libc::getrusage(who, &mut u) } == 0).then_some(u.ru_maxrss)
    };
    let a = get(libc::RUSAGE_SELF)?;
    let b = get(libc::RUSAGE_CHILDREN).unwrap_or(0);
    Some(a.max(b))
}
