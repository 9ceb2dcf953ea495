//! Resolving a stage's parameters into one canonical JSON value, and telling
//! two resolved sets apart key by key ("lr 1e-4 -> 3e-5").

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::pipeline::{ParamSpec, Pipeline, StageSpec};

/// The resolved parameters of `stage` under `profile`, as a JSON value whose
/// object keys are sorted (serde_json's default map), so its text is canonical.
pub fn resolve(p: &Pipeline, stage: &StageSpec, profile: &str, workspace: &Path) -> Result<Value> {
    match &stage.params {
        ParamSpec::None => Ok(Value::Object(Default::default())),
        ParamSpec::Inline(v) => Ok(v.clone()),
        ParamSpec::Profile(name) => {
            let file = p.config_dir.join(profile).join(format!("{name}.json"));
            if !file.exists() {
                let dir = p.config_dir.join(profile);
                if !dir.is_dir() {
                    let known = list_profiles(&p.config_dir);
                    bail!(
                        "stage '{}': profile '{profile}' does not exist (no folder {}); profiles: {}",
                        stage.name,
                        dir.display(),
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    );
                }
                bail!(
                    "stage '{}': its parameters file {} does not exist; write it, or give `params:` inline in {}",
                    stage.name,
                    file.display(),
                    stage.defined_in.display()
                );
            }
            read_profile_file(&file)
        }
        ParamSpec::Keys(files) => {
            let mut out = serde_json::Map::new();
            for (file, keys) in files {
                let abs = file.under(workspace);
                let text = std::fs::read_to_string(&abs).with_context(|| {
                    format!(
                        "stage '{}' reads parameters from {}, which cannot be read; create it in the workspace",
                        stage.name, file
                    )
                })?;
                let doc: Value =
                    serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", abs.display()))?;
                for key in keys {
                    let v = lookup(&doc, key).with_context(|| {
                        format!(
                            "stage '{}': parameter '{key}' is not in {}",
                            stage.name, file
                        )
                    })?;
                    let name = if file.as_str() == "params.yaml" {
                        key.clone()
                    } else {
                        format!("{file}:{key}")
                    };
                    out.insert(name, v.clone());
                }
            }
            Ok(Value::Object(out))
        }
    }
}

/// Where `stage`'s parameters come from, for messages: the profile file,
/// the manifest that gives them inline, or the params files it reads.
pub fn source(p: &Pipeline, stage: &StageSpec, profile: &str) -> String {
    match &stage.params {
        ParamSpec::None => "no parameters".to_string(),
        ParamSpec::Inline(_) => format!("params in {}", stage.defined_in.display()),
        ParamSpec::Profile(name) => p
            .config_dir
            .join(profile)
            .join(format!("{name}.json"))
            .display()
            .to_string(),
        ParamSpec::Keys(files) => files
            .iter()
            .map(|(f, _)| f.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Reads a profile's parameter file, replacing every `{"$include": "F.json"}`
/// object with the content of `F.json` from the same folder (itself read the
/// same way), so that, for example, a sweep names the stage-2 recipe it varies
/// instead of copying it. The included text enters the resolved parameters,
/// hence the fingerprint: changing `F.json` makes both stages stale.
pub fn read_profile_file(file: &Path) -> Result<Value> {
    read_including(file, &mut Vec::new())
}

fn read_including(file: &Path, chain: &mut Vec<std::path::PathBuf>) -> Result<Value> {
    if chain.iter().any(|f| f == file) {
        bail!(
            "{}: \"$include\" loops back to itself ({}); remove one of the includes",
            file.display(),
            chain
                .iter()
                .chain(std::iter::once(&file.to_path_buf()))
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    chain.push(file.to_path_buf());
    expand_includes(&mut v, file, chain)?;
    chain.pop();
    Ok(v)
}

fn expand_includes(v: &mut Value, file: &Path, chain: &mut Vec<std::path::PathBuf>) -> Result<()> {
    match v {
        Value::Object(m) if m.contains_key("$include") => {
            let Some(Value::String(name)) = m.get("$include").filter(|_| m.len() == 1) else {
                bail!(
                    "{}: an \"$include\" object must hold only the name of a JSON file in the same folder, as {{\"$include\": \"stage2.json\"}}",
                    file.display()
                );
            };
            let target = file.parent().unwrap_or(Path::new(".")).join(name.as_str());
            if !target.is_file() {
                bail!(
                    "{}: \"$include\": {} does not exist; name a file of the same folder",
                    file.display(),
                    target.display()
                );
            }
            *v = read_including(&target, chain)?;
        }
        Value::Object(m) => {
            for x in m.values_mut() {
                expand_includes(x, file, chain)?;
            }
        }
        Value::Array(a) => {
            for x in a {
                expand_includes(x, file, chain)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn lookup<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(doc, |v, part| v.get(part))
}

fn list_profiles(config: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(config)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    v.sort();
    v
}

/// One changed parameter: dotted key, old and new values (None when absent).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParamChange {
    pub key: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for ParamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| match v {
            None => "(unset)".to_string(),
            Some(v) => show_value(v),
        };
        write!(f, "{} {} -> {}", self.key, show(&self.old), show(&self.new))
    }
}

/// A value as a person writes it: small and large floats in scientific
/// notation (`1e-4`, not `0.0001`), everything else as JSON.
fn show_value(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() && f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e7) => format!("{f:e}"),
        _ => v.to_string(),
    }
}

/// Every leaf that differs between two resolved parameter sets.
pub fn diff(old: &Value, new: &Value) -> Vec<ParamChange> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| ParamChange {
            key: k.clone(),
            old: a.get(k).cloned(),
            new: b.get(k).cloned(),
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn includes_are_expanded_and_loops_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("base.json"),
            r#"{"lr": 1e-4, "m": {"layers": 2}}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("sweep.json"),
            r#"{"base": {"$include": "base.json"}, "grid": {"lr": [1, 2]}}"#,
        )
        .unwrap();
        let v = read_profile_file(&d.path().join("sweep.json")).unwrap();
        assert_eq!(
            v,
            json!({"base": {"lr": 1e-4, "m": {"layers": 2}}, "grid": {"lr": [1, 2]}})
        );
        std::fs::write(d.path().join("a.json"), r#"{"x": {"$include": "b.json"}}"#).unwrap();
        std::fs::write(d.path().join("b.json"), r#"{"y": {"$include": "a.json"}}"#).unwrap();
        let e = format!(
            "{:#}",
            read_profile_file(&d.path().join("a.json")).unwrap_err()
        );
        assert!(e.contains("loops back"), "{e}");
        std::fs::write(
            d.path().join("c.json"),
            r#"{"x": {"$include": "none.json"}}"#,
        )
        .unwrap();
        let e = format!(
            "{:#}",
            read_profile_file(&d.path().join("c.json")).unwrap_err()
        );
        assert!(e.contains("none.json does not exist"), "{e}");
    }

    #[test]
    fn diff_names_leaves() {
        let d = diff(
            &json!({"lr": 1e-4, "opt": {"wd": 0.01}, "gone": 1}),
            &json!({"lr": 3e-5, "opt": {"wd": 0.01}, "new": true}),
        );
        let s: Vec<String> = d.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            s,
            vec![
                "gone 1 -> (unset)",
                "lr 1e-4 -> 3e-5",
                "new (unset) -> true"
            ]
        );
    }

    /// The shipped profiles' parameters pass the check, and merging over the
    /// defaults leaves each model stage's shipped parameters as they were
    /// read before (so the measured demo still describes these configs).
    #[test]
    fn the_shipped_configs_pass_and_read_as_before() {
        use crate::stages::model_params::{BaselineParams, Stage1Params, Stage2Params};
        use crate::stages::{check_params, parse_over_defaults};
        use serde::{de::DeserializeOwned, Serialize};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        fn same<T>(v: &serde_json::Value)
        where
            T: Default + Serialize + DeserializeOwned,
        {
            let plain: T = serde_json::from_value(v.clone()).unwrap();
            let merged: T = parse_over_defaults(v).unwrap();
            assert_eq!(
                serde_json::to_value(plain).unwrap(),
                serde_json::to_value(merged).unwrap()
            );
        }
        for profile in ["demo", "paper"] {
            for (kind, file) in [
                ("stage1", "stage1.json"),
                ("stage2", "stage2.json"),
                ("baseline", "baseline.json"),
                ("stage2_sweep", "sweep.json"),
                ("synth", "synth.json"),
                ("seedvc", "seedvc.json"),
                ("elements", "elements.json"),
                ("shortcut_audit", "audit.json"),
            ] {
                let f = root.join(profile).join(file);
                if !f.exists() {
                    assert_eq!((profile, kind), ("paper", kind), "{}", f.display());
                    continue;
                }
                let v = read_profile_file(&f).unwrap();
                check_params(kind, &v).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
                match kind {
                    "stage1" => same::<Stage1Params>(&v),
                    "stage2" => same::<Stage2Params>(&v),
                    "baseline" => same::<BaselineParams>(&v),
                    _ => {}
                }
            }
        }
    }
}
