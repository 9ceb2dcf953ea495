//! The pipeline definition: `pipeline/*.yaml` and the stage manifests it names,
//! parsed into [`Pipeline`], a list of [`StageSpec`]s with every path checked.
//!
//! A pipeline file lists stages by name. Each entry is empty (the manifest is
//! `<stages_dir>/<name>.yaml`), `{manifest: PATH}`, or the stage inline. A
//! stage is either a built-in kind (`kind: NAME`, `params:` inline, a profile
//! file name, or absent for `<config>/<profile>/<name>.json`) or a command
//! stage in DVC's `dvc.yaml` vocabulary: `cmd`, `deps`, `outs`, `params`,
//! `wdir`, `desc`, `always_changed`, `frozen`, with DVC's meaning.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

pub use crate::exec::resources::Resources;
use crate::exec::resources::{parse_mem, parse_time};
use crate::relpath::RelPath;

/// A parsed, path-checked pipeline (not yet checked as a graph: see `dag`).
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    /// Folder of the profiles (`<config>/<profile>/<stage>.json`).
    pub config_dir: PathBuf,
    pub stages: Vec<StageSpec>,
    /// The profile the stages were selected for.
    pub profile: String,
    /// Stages the file declares for other profiles only, with those profiles.
    pub other_profiles: Vec<(String, Vec<String>)>,
}

/// What a stage does when it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A built-in kind (see `crate::stages`).
    Builtin { kind: String },
    /// A shell command run in the workspace (or `wdir`), as DVC runs it.
    Command { cmd: String, wdir: Option<RelPath> },
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    /// The name a built-in stage asks for; the path itself for list entries.
    pub name: String,
    pub path: RelPath,
    /// DVC's `persist: true`: the output is not removed before the command runs.
    pub persist: bool,
}

/// Where a stage's parameters come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSpec {
    None,
    /// `<config>/<profile>/<name>.json`.
    Profile(String),
    Inline(serde_json::Value),
    /// DVC's form: keys of a params file in the workspace (`params.yaml` by default).
    Keys(Vec<(RelPath, Vec<String>)>),
}

#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    /// The file that defines the stage, for messages.
    pub defined_in: PathBuf,
    pub desc: Option<String>,
    pub action: Action,
    pub deps: Vec<PortSpec>,
    pub outs: Vec<PortSpec>,
    pub params: ParamSpec,
    pub resources: Resources,
    /// Environment variables whose values enter the fingerprint.
    pub env: Vec<String>,
    pub shards: Option<u32>,
    pub always_changed: bool,
    /// Keep the stage's per-item memo (`.pipeline/items/<stage>/`) once its
    /// output is recorded; dropped otherwise, since it holds the output's
    /// bytes a second time.
    pub keep_memo: bool,
    pub frozen: bool,
    /// `local` or `slurm`: overrides the run's executor for this stage.
    pub executor: Option<String>,
}

impl StageSpec {
    pub fn kind_name(&self) -> &str {
        match &self.action {
            Action::Builtin { kind } => kind,
            Action::Command { .. } => "cmd",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    #[allow(dead_code)]
    desc: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    stages_dir: Option<String>,
    stages: Ordered<Option<RawStage>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStage {
    manifest: Option<String>,
    desc: Option<String>,
    kind: Option<String>,
    cmd: Option<Value>,
    wdir: Option<String>,
    deps: Option<Value>,
    outs: Option<Value>,
    params: Option<Value>,
    resources: Option<RawResources>,
    env: Option<Vec<String>>,
    shards: Option<u32>,
    always_changed: Option<bool>,
    keep_memo: Option<bool>,
    frozen: Option<bool>,
    executor: Option<String>,
    #[allow(dead_code)]
    meta: Option<Value>,
    /// The profiles this stage belongs to (all when absent): the demo's `synth`
    /// stands in for the paper's `download` and `voxceleb_subset`.
    profiles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<u32>,
    mem: Option<Value>,
    gpus: Option<u32>,
    time: Option<Value>,
}

/// A YAML mapping kept in file order.
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of stage names to stage definitions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, T>()? {
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn read_yaml<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<T> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read {}: give the pipeline file with -f, or run from the project folder",
            file.display()
        )
    })?;
    serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// Reads and checks the pipeline file and every manifest it names, keeping
/// the stages that belong to `profile`.
pub fn load(file: &Path, profile: &str) -> Result<Pipeline> {
    let raw: RawPipeline = read_yaml(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let config_dir = clean(&base.join(raw.config.as_deref().unwrap_or("../config")));
    let stages_dir = clean(&base.join(raw.stages_dir.as_deref().unwrap_or("../stages")));
    let mut stages = Vec::new();
    let mut other_profiles = Vec::new();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for (name, entry) in raw.stages.0 {
        check_name(&name).map_err(|e| anyhow!("{}: stage '{name}': {e}", file.display()))?;
        if stages.iter().any(|s: &StageSpec| s.name == name) {
            bail!("{}: stage '{name}' is defined twice", file.display());
        }
        let (raw, defined_in) = match entry {
            None => {
                let m = stages_dir.join(format!("{name}.yaml"));
                (read_yaml::<RawStage>(&m)?, m)
            }
            Some(RawStage {
                manifest: Some(m),
                profiles,
                ..
            }) => {
                let m = clean(&base.join(m));
                let mut raw = read_yaml::<RawStage>(&m)?;
                if profiles.is_some() {
                    raw.profiles = profiles;
                }
                (raw, m)
            }
            Some(inline) => (inline, file.to_path_buf()),
        };
        if let Some(ps) = &raw.profiles {
            listed.extend(ps.iter().cloned());
            if !ps.iter().any(|p| p == profile) {
                other_profiles.push((name, ps.clone()));
                continue;
            }
        }
        let spec = interpret(&name, raw, &defined_in)
            .map_err(|e| anyhow!("{}: stage '{name}': {e}", defined_in.display()))?;
        stages.push(spec);
    }
    check_profile(file, &config_dir, profile, &listed)?;
    if stages.is_empty() {
        bail!("{}: the pipeline declares no stages", file.display());
    }
    Ok(Pipeline {
        file: file.to_path_buf(),
        config_dir,
        stages,
        profile: profile.to_string(),
        other_profiles,
    })
}

/// A profile is a folder of the config folder or a name some stage's
/// `profiles:` lists. A pipeline with neither (no config folder, no stage
/// naming a profile) takes any profile, since nothing depends on it.
fn check_profile(
    file: &Path,
    config_dir: &Path,
    profile: &str,
    listed: &BTreeSet<String>,
) -> Result<()> {
    let mut known = listed.clone();
    if let Ok(rd) = std::fs::read_dir(config_dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                known.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if known.is_empty() || known.contains(profile) {
        return Ok(());
    }
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    bail!(
        "profile '{profile}' does not exist: {} holds no folder {profile} and no stage of {} \
         lists it (profiles: {}); choose one with --profile or PIPELINE_PROFILE",
        config_dir.display(),
        file.display(),
        names.join(", ")
    )
}

/// `a/b/../c` -> `a/c`, without touching the file system, so messages name
/// files the way a person would.
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err("a stage name may hold only letters, digits, '_', '-' and '.'".into())
    }
}

fn interpret(name: &str, raw: RawStage, defined_in: &Path) -> Result<StageSpec> {
    if raw.manifest.is_some() {
        bail!("a manifest file cannot name another manifest");
    }
    let action = match (raw.kind, raw.cmd) {
        (Some(_), Some(_)) => {
            bail!("give either `kind:` (a built-in stage) or `cmd:` (a command), not both")
        }
        (None, None) => bail!("give `kind:` (a built-in stage) or `cmd:` (a command)"),
        (Some(kind), None) => {
            if crate::stages::kind_info(&kind).is_none() {
                bail!(
                    "unknown kind '{kind}' (known kinds: {})",
                    crate::stages::kind_names()
                );
            }
            if raw.wdir.is_some() {
                bail!("`wdir` applies to command stages only");
            }
            Action::Builtin { kind }
        }
        (None, Some(cmd)) => Action::Command {
            cmd: command_text(&cmd)?,
            wdir: raw
                .wdir
                .as_deref()
                .filter(|w| *w != ".")
                .map(|w| RelPath::parse(w).map_err(|e| anyhow!("wdir: {e}")))
                .transpose()?,
        },
    };
    let builtin = matches!(action, Action::Builtin { .. });
    let deps = ports(raw.deps.as_ref(), "deps")?;
    let outs = ports(raw.outs.as_ref(), "outs")?;
    let params = match (raw.params, builtin) {
        (None, true) => ParamSpec::Profile(name.to_string()),
        (None, false) => ParamSpec::None,
        (Some(Value::String(s)), true) => ParamSpec::Profile(s),
        (Some(v @ Value::Mapping(_)), true) => ParamSpec::Inline(
            serde_json::to_value(&v).map_err(|e| anyhow!("params: {e}"))?,
        ),
        (Some(_), true) => bail!("params of a built-in stage: a mapping, or the name of a profile file"),
        (Some(Value::Sequence(items)), false) => ParamSpec::Keys(param_keys(&items)?),
        (Some(_), false) => bail!("params of a command stage: a list of keys of params.yaml, or of `FILE: [keys]`, as in DVC"),
    };
    let resources = match raw.resources {
        None => Resources::default(),
        Some(r) => {
            let d = Resources::default();
            Resources {
                cpus: r.cpus.unwrap_or(d.cpus).max(1),
                gpus: r.gpus.unwrap_or(d.gpus),
                mem_mb: r
                    .mem
                    .as_ref()
                    .map(parse_mem)
                    .transpose()?
                    .unwrap_or(d.mem_mb),
                time_min: r
                    .time
                    .as_ref()
                    .map(parse_time)
                    .transpose()?
                    .unwrap_or(d.time_min),
            }
        }
    };
    if let Some(e) = &raw.executor {
        if e != "local" && e != "slurm" {
            bail!("executor '{e}': use local or slurm");
        }
    }
    let keep_memo = raw
        .keep_memo
        .unwrap_or_else(|| keeps_memo_by_default(action_kind(&action)));
    Ok(StageSpec {
        name: name.to_string(),
        defined_in: defined_in.to_path_buf(),
        desc: raw.desc,
        action,
        deps,
        outs,
        params,
        resources,
        env: raw.env.unwrap_or_default(),
        shards: raw.shards.filter(|&n| n > 1),
        always_changed: raw.always_changed.unwrap_or(false),
        keep_memo,
        frozen: raw.frozen.unwrap_or(false),
        executor: raw.executor,
    })
}

/// Kinds whose memo is kept by default: each item of a sweep is a training,
/// and adding one grid point must not retrain the others; a download's memo
/// holds the verified archives, and fetching tens of gigabytes again costs
/// more than keeping them; the VoxCeleb2 subset's memo holds each shard's
/// wavs (the output links to them, so keeping it costs little), and a new
/// identity then fetches only the shards that hold it, not 80 GB
/// (`keep_memo: false` drops them).
const KEEPS_MEMO: &[&str] = &["stage2_sweep", "download", "voxceleb_subset"];

/// Whether a stage of `kind` keeps its memo when its manifest does not say.
pub fn keeps_memo_by_default(kind: &str) -> bool {
    KEEPS_MEMO.contains(&kind)
}

fn action_kind(a: &Action) -> &str {
    match a {
        Action::Builtin { kind } => kind,
        Action::Command { .. } => "cmd",
    }
}

fn command_text(v: &Value) -> Result<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        // DVC runs a list of commands one after another, stopping at the first failure.
        Value::Sequence(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => bail!("cmd: every entry of the list must be a string"),
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.join(" && ")),
        _ => bail!("cmd: a command string, or a list of them"),
    }
}

fn ports(v: Option<&Value>, field: &str) -> Result<Vec<PortSpec>> {
    let mut out = Vec::new();
    let path = |s: &str| RelPath::parse(s).map_err(|e| anyhow!("{field}: {e}"));
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                match item {
                    Value::String(s) => out.push(PortSpec {
                        name: s.clone(),
                        path: path(s)?,
                        persist: false,
                    }),
                    // DVC's `- path: {persist: true, cache: false, ...}`.
                    Value::Mapping(m) if m.len() == 1 => {
                        let (k, opts) = m.iter().next().expect("one entry");
                        let Value::String(s) = k else {
                            bail!("{field}: an entry's path must be a string")
                        };
                        let persist = opts
                            .get("persist")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        out.push(PortSpec {
                            name: s.clone(),
                            path: path(s)?,
                            persist,
                        });
                    }
                    _ => bail!("{field}: each entry is a path, or `PATH: {{options}}`"),
                }
            }
        }
        // Named form for built-in stages: `{elements: data/elements}`.
        Some(Value::Mapping(m)) => {
            for (k, p) in m {
                let (Value::String(k), Value::String(p)) = (k, p) else {
                    bail!("{field}: a mapping of names to paths")
                };
                out.push(PortSpec {
                    name: k.clone(),
                    path: path(p)?,
                    persist: false,
                });
            }
        }
        Some(_) => bail!("{field}: a list of paths, or a mapping of names to paths"),
    }
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            if a.name == b.name || a.path == b.path {
                bail!("{field}: '{}' is declared twice", b.path);
            }
        }
    }
    Ok(out)
}

fn param_keys(items: &[Value]) -> Result<Vec<(RelPath, Vec<String>)>> {
    let default = RelPath::parse("params.yaml").expect("valid");
    let mut out: Vec<(RelPath, Vec<String>)> = Vec::new();
    let mut add = |file: RelPath, key: String| match out.iter_mut().find(|(f, _)| *f == file) {
        Some((_, keys)) => keys.push(key),
        None => out.push((file, vec![key])),
    };
    for item in items {
        match item {
            Value::String(k) => add(default.clone(), k.clone()),
            Value::Mapping(m) => {
                for (f, keys) in m {
                    let Value::String(f) = f else {
                        bail!("params: a file name must be a string")
                    };
                    let file = RelPath::parse(f).map_err(|e| anyhow!("params: {e}"))?;
                    match keys {
                        Value::Sequence(ks) => {
                            for k in ks {
                                let Value::String(k) = k else {
                                    bail!("params: keys must be strings")
                                };
                                add(file.clone(), k.clone());
                            }
                        }
                        _ => bail!("params: `{f}:` takes a list of keys"),
                    }
                }
            }
            _ => bail!("params: each entry is a key or `FILE: [keys]`"),
        }
    }
    Ok(out)
}
