//! Human output: the progress display of a run, status tables, lineage trees.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline::engine::compare::Diff;
use pipeline::engine::lineage::{Lineage, Node, Now, StepNode};
use pipeline::engine::run::{Event, Reporter, Summary};
use pipeline::engine::status::{GoneAs, StageRow};
use pipeline::store::{StepId, StepStatus};
use pipeline::util::{human_bytes, human_ms};

/// Without a terminal, a running step's progress is printed at most this often.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(60);

/// Spinners for running steps on a terminal; plain lines otherwise.
pub struct TermReporter {
    mp: MultiProgress,
    bars: Mutex<HashMap<StepId, ProgressBar>>,
    /// Without a terminal: when each step's progress was last printed.
    printed: Mutex<HashMap<StepId, Instant>>,
    tty: bool,
}

impl TermReporter {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        TermReporter {
            mp: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            printed: Mutex::new(HashMap::new()),
            tty,
        }
    }

    pub fn note(&self, line: &str) {
        if self.tty {
            let _ = self.mp.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self, s: &Summary, dry_run: bool) {
        if dry_run {
            return;
        }
        let mut parts = vec![
            format!("{} ran", s.ran.len()),
            format!("{} up to date", s.up_to_date.len()),
        ];
        if !s.failed.is_empty() {
            parts.push(format!(
                "{} failed ({})",
                s.failed.len(),
                s.failed.join(", ")
            ));
        }
        if !s.blocked.is_empty() {
            parts.push(format!(
                "{} not run ({})",
                s.blocked.len(),
                s.blocked.join(", ")
            ));
        }
        if s.interrupted.is_some() {
            parts.push("interrupted".into());
        }
        self.note(&format!("pipeline: {}", parts.join(", ")));
        if !s.failed.is_empty() {
            self.note(&format!(
                "see the failed step's output with `pipeline log {}`",
                s.failed[0]
            ));
        }
    }
}

impl Reporter for TermReporter {
    fn event(&self, e: Event) {
        match e {
            Event::Note { text } => self.note(&text),
            Event::Stopping { why } => self.note(&format!("{why}: stopping the running steps")),
            Event::Detached { slurm_jobs } => self.note(&format!(
                "--detach: left Slurm jobs {} running; the next `pipeline run` re-attaches to them",
                slurm_jobs.join(", ")
            )),
            Event::Requeued {
                stage,
                slurm_job,
                restarted,
                attempt,
                ..
            } => self.note(&if restarted {
                format!(
                    "{stage}: Slurm requeued job {slurm_job} after it started; it started again \
                     (attempt {attempt})"
                )
            } else {
                format!(
                    "{stage}: Slurm put job {slurm_job} back in the queue after it started; \
                     following it"
                )
            }),
            Event::Resubmitted {
                stage,
                slurm_job,
                ended,
                new_job,
                attempt,
                max_attempts,
                ..
            } => self.note(&format!(
                "{stage}: Slurm job {slurm_job} ended {ended}; resubmitted as job {new_job} \
                 (attempt {attempt} of {max_attempts})"
            )),
            Event::Reattached {
                stage,
                step,
                slurm_job,
                slurm_state,
                pid,
            } => self.note(&match (slurm_job, pid) {
                (Some(job), _) => format!(
                    "re-attaching to step {step} ({stage}), Slurm job {job} {}",
                    slurm_state.unwrap_or_default()
                ),
                (None, pid) => format!(
                    "re-attaching to step {step} ({stage}), still running as pid {}",
                    pid.map(|p| p.to_string()).unwrap_or_default()
                ),
            }),
            Event::RecordedLate {
                stage,
                step,
                status,
            } => self.note(&format!(
                "recorded step {step} ({stage}), which finished after its head process stopped: \
                 {status}"
            )),
            Event::Interrupted { stage, step, why } => {
                if let Some(pb) = self.bars.lock().expect("reporter lock").remove(&step) {
                    pb.finish_and_clear();
                }
                self.note(&format!("  stopped     {stage} (step {step}): {why}"))
            }
            Event::UpToDate { stage } => self.note(&format!("  up to date  {stage}")),
            Event::WouldRun { stage, reasons } => {
                let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                self.note(&format!("  would run   {stage}: {}", why.join("; ")));
            }
            Event::MayRun { stage, why } => self.note(&format!("  may run     {stage}: {why}")),
            Event::Started {
                stage,
                step,
                reasons,
                ..
            } => {
                let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                if self.tty {
                    let pb = self.mp.add(ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.set_message(format!("running     {stage} (step {step})"));
                    pb.enable_steady_tick(Duration::from_millis(120));
                    self.bars.lock().expect("reporter lock").insert(step, pb);
                }
                self.note(&format!(
                    "  start       {stage} (step {step}): {}",
                    why.join("; ")
                ));
            }
            Event::Finished {
                stage,
                step,
                status,
                elapsed,
                error,
                ..
            } => {
                if let Some(pb) = self.bars.lock().expect("reporter lock").remove(&step) {
                    pb.finish_and_clear();
                }
                let t = human_ms(elapsed.as_millis() as i64);
                match status {
                    StepStatus::Succeeded => self.note(&format!("  done        {stage} in {t}")),
                    _ => self.note(&format!(
                        "  FAILED      {stage} after {t}: {}",
                        error.unwrap_or_else(|| status.to_string())
                    )),
                }
            }
            Event::Blocked { stage, because } => {
                self.note(&format!("  not run     {stage}: {because}"))
            }
            Event::Progress {
                stage,
                step,
                progress,
            } => {
                if let Some(pb) = self.bars.lock().expect("reporter lock").get(&step) {
                    pb.set_message(format!(
                        "running     {stage} (step {step}): {}",
                        progress.text()
                    ));
                    return;
                }
                if self.tty {
                    return;
                }
                let mut printed = self.printed.lock().expect("reporter lock");
                let due = printed
                    .get(&step)
                    .is_none_or(|t| t.elapsed() >= PROGRESS_LINE_EVERY);
                if due {
                    printed.insert(step, Instant::now());
                    drop(printed);
                    self.note(&format!("  progress    {stage}: {}", progress.text()));
                }
            }
        }
    }
}

/// `run --json`: every event as one JSON line on stdout (`{"event":
/// "started", "stage": ..., "step": ...}`), then a `summary` line; nothing
/// else is written there.
pub struct JsonReporter {
    out: Mutex<std::io::Stdout>,
}

impl JsonReporter {
    pub fn new() -> Self {
        JsonReporter {
            out: Mutex::new(std::io::stdout()),
        }
    }

    fn line(&self, v: &impl serde::Serialize) {
        use std::io::Write;
        let mut out = self.out.lock().expect("reporter lock");
        if let Ok(text) = serde_json::to_string(v) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub fn finish(&self, s: &Summary, dry_run: bool) {
        self.line(&serde_json::json!({
            "event": "summary",
            "dry_run": dry_run,
            "ran": s.ran,
            "up_to_date": s.up_to_date,
            "failed": s.failed,
            "blocked": s.blocked,
            "interrupted_by": s.interrupted,
        }));
    }
}

impl Reporter for JsonReporter {
    fn event(&self, e: Event) {
        self.line(&e);
    }
}

/// The run's display: words on the terminal, or JSON lines.
pub enum RunDisplay {
    Term(TermReporter),
    Json(JsonReporter),
}

impl RunDisplay {
    pub fn note(&self, text: &str) {
        match self {
            RunDisplay::Term(t) => t.note(text),
            RunDisplay::Json(j) => j.event(Event::Note {
                text: text.to_string(),
            }),
        }
    }

    pub fn finish(&self, s: &Summary, dry_run: bool) {
        match self {
            RunDisplay::Term(t) => t.finish(s, dry_run),
            RunDisplay::Json(j) => j.finish(s, dry_run),
        }
    }
}

impl Reporter for RunDisplay {
    fn event(&self, e: Event) {
        match self {
            RunDisplay::Term(t) => t.event(e),
            RunDisplay::Json(j) => j.event(e),
        }
    }
}

/// The status table.
pub fn status_text(rows: &[StageRow]) -> String {
    let width = rows.iter().map(|r| r.stage.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:width$}  {:11}  why\n", "stage", "state");
    for r in rows {
        let mut state = match r.state.as_str() {
            "up_to_date" => "up to date".to_string(),
            "may_run" => "may run".to_string(),
            "invalid" => "cannot run".to_string(),
            other => other.to_string(),
        };
        if let Some(g) = &r.gone {
            let step = g.step;
            state = match g.gone_as {
                GoneAs::Finished => format!(
                    "{state} (step {step} finished after its head stopped; the next run records it)"
                ),
                GoneAs::Interrupted => {
                    format!("{state} (step {step} was interrupted: its processes are gone)")
                }
            };
        }
        if let Some(run) = &r.running {
            let step = run.step;
            state = match (&run.slurm_job_id, &run.slurm_state) {
                (Some(job), Some(st)) => format!("running (step {step}, Slurm job {job} {st})"),
                _ => format!("running (step {step})"),
            };
            if let Some(p) = run.progress {
                state = format!("{state}: {}", p.text());
            }
        }
        s.push_str(&format!(
            "{:width$}  {state:11}  {}\n",
            r.stage,
            r.why.join("; ")
        ));
    }
    s
}

/// A comparison of two steps as a table: key, old, new, change.
pub fn diff_text(what: &str, d: &Diff) -> String {
    let (o, n) = (
        format!("step {}", d.old_step),
        format!("step {}", d.new_step),
    );
    let mut s = format!("{what} of {}: {o} -> {n}\n", d.stage);
    if d.rows.is_empty() {
        s.push_str("no differences\n");
        return s;
    }
    let show = |v: &Option<serde_json::Value>| match v {
        None => "-".to_string(),
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Number(x)) => match x.as_f64() {
            Some(f) if x.is_f64() => format!("{f:.4}"),
            _ => x.to_string(),
        },
        Some(v) => v.to_string(),
    };
    let cells: Vec<[String; 4]> = d
        .rows
        .iter()
        .map(|r| {
            [
                r.key.clone(),
                show(&r.old),
                show(&r.new),
                r.change.map(|c| format!("{c:+.4}")).unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["key".to_string(), o, n, "change".to_string()];
    let w: Vec<usize> = (0..4)
        .map(|i| {
            cells
                .iter()
                .chain([&head])
                .map(|c| c[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&head).chain(&cells) {
        let line = format!(
            "{:w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// A UTC timestamp for people, from unix milliseconds.
pub fn utc(ms: i64) -> String {
    let t = pipeline::util::UtcTime::of(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The lineage tree as indented text.
pub fn lineage_text(l: &Lineage) -> String {
    let mut s = String::new();
    if let Some(w) = &l.within {
        let recorded = match &l.file_hash {
            Some(h) => format!("this file is part of {w} (its blake3 {h})"),
            None => format!("this file is in {w} now, but not in its recorded version"),
        };
        s.push_str(&format!(
            "{recorded}{}\n",
            l.file_now.as_ref().map(now_text).unwrap_or_default()
        ));
    }
    node_text(&l.root, "", l.downstream, &mut s);
    s
}

/// A recorded version against the disk now: nothing when unchanged.
fn now_text(now: &Now) -> String {
    match now {
        Now::Unchanged => String::new(),
        Now::Missing => "  MISSING now".to_string(),
        Now::Changed { hash } => format!(
            "  CHANGED since recorded (now blake3 {})",
            &hash[..16.min(hash.len())]
        ),
    }
}

fn node_text(n: &Node, indent: &str, downstream: bool, s: &mut String) {
    let label = match &n.name {
        Some(name) if name != &n.path => format!("{name}: {}", n.path),
        _ => n.path.clone(),
    };
    let files = if n.is_dir {
        format!(", {} files", n.file_count)
    } else {
        String::new()
    };
    s.push_str(&format!(
        "{indent}{label}  blake3 {}  ({}{files}, recorded {}){}\n",
        &n.hash[..16.min(n.hash.len())],
        human_bytes(n.size.max(0) as u64),
        utc(n.recorded_at),
        now_text(&n.now)
    ));
    let child = format!("{indent}    ");
    match &n.produced_by {
        Some(st) => step_text(st, "made by", &child, downstream, s),
        // Downstream, an artifact no step read is where the tree ends.
        None if downstream && n.consumed_by.is_empty() => s.push_str(&format!(
            "{child}a final output: no recorded step read this version\n"
        )),
        None if n.consumed_by.is_empty() => s.push_str(&format!(
            "{child}a source: no step of this pipeline made it\n"
        )),
        None => {}
    }
    for st in &n.consumed_by {
        step_text(st, "read by", &child, downstream, s);
    }
}

fn step_text(st: &StepNode, verb: &str, indent: &str, downstream: bool, s: &mut String) {
    if st.repeated {
        s.push_str(&format!(
            "{indent}{verb} step {} ({}), shown above\n",
            st.step, st.stage
        ));
        return;
    }
    let times = match (st.started_at, st.finished_at) {
        (Some(a), Some(b)) => format!(", {} for {}", utc(a), human_ms(b - a)),
        _ => String::new(),
    };
    let mem = st
        .peak_rss_kb
        .map(|k| format!(", peak {}", human_bytes(k as u64 * 1024)))
        .unwrap_or_default();
    s.push_str(&format!(
        "{indent}{verb} step {}: stage {} ({}) on {} via {}{}{times}{mem}\n",
        st.step,
        st.stage,
        st.code_version,
        st.host.as_deref().unwrap_or("?"),
        st.executor,
        st.slurm_job_id
            .as_ref()
            .map(|j| format!(" job {j}"))
            .unwrap_or_default(),
    ));
    if let Some(c) = &st.command {
        s.push_str(&format!("{indent}  command: {c}\n"));
    }
    if st.params.as_object().is_some_and(|o| !o.is_empty()) {
        s.push_str(&format!("{indent}  params: {}\n", st.params));
    }
    if st.env.as_object().is_some_and(|o| !o.is_empty()) {
        s.push_str(&format!("{indent}  env: {}\n", st.env));
    }
    for a in &st.artifacts {
        node_text(a, &format!("{indent}  "), downstream, s);
    }
}
