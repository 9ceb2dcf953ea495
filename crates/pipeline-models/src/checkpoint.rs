//! Weights on disk: safetensors files whose tensor names are the reference
//! state-dict names. A reference PyTorch checkpoint (a state dict, or a dict
//! holding it under `model`) converts with one line (Python with torch,
//! `safetensors` and `numpy` installed):
//!
//! ```text
//! python -c "import torch,sys; from safetensors.torch import save_file; sd=torch.load(sys.argv[1],map_location='cpu'); sd=sd.get('model',sd); save_file({k:v.contiguous() for k,v in sd.items()}, sys.argv[2])" ref.pt ref.safetensors
//! ```
//!
//! Loading is strict (every variable present with its exact shape, nothing
//! left over) unless the caller names a prefix mapping, as stage 2 does when it
//! takes the stage-1 encoder and head. Files are written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn::VarStore, Tensor};

/// Reads every tensor of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let v = Tensor::read_safetensors(path)
        .with_context(|| format!("reading safetensors file {}", path.display()))?;
    Ok(v.into_iter().collect())
}

/// Writes named tensors (sorted by name) to `path` atomically.
pub fn write_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let list: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&list, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Saves every variable of `vs` under its state-dict name.
pub fn save_vars(vs: &VarStore, path: &Path) -> Result<()> {
    write_tensors(&vs.variables().into_iter().collect(), path)
}

/// Copies `src` into the variable `dst`, checking the shape.
fn copy_checked(name: &str, dst: &Tensor, src: &Tensor, file: &Path) -> Result<()> {
    if dst.size() != src.size() {
        bail!(
            "{}: tensor {name} has shape {:?}, the model expects {:?} (is the config the one the weights were trained with?)",
            file.display(),
            src.size(),
            dst.size()
        );
    }
    tch::no_grad(|| {
        let mut d = dst.shallow_clone();
        d.f_copy_(src)
    })
    .with_context(|| format!("copying {name} from {}", file.display()))?;
    Ok(())
}

/// Loads a file that must hold exactly the variables of `vs`, by name and shape.
pub fn load_strict(vs: &VarStore, path: &Path) -> Result<()> {
    let file = read_tensors(path)?;
    let vars = vs.variables();
    let mut missing: Vec<&String> = vars.keys().filter(|k| !file.contains_key(*k)).collect();
    let mut extra: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        missing.sort();
        extra.sort();
        bail!(
            "{} does not match the model: {} missing ({}), {} unexpected ({})",
            path.display(),
            missing.len(),
            head(&missing),
            extra.len(),
            head(&extra)
        );
    }
    for (name, var) in &vars {
        copy_checked(name, var, &file[name], path)?;
    }
    Ok(())
}

/// Loads the tensors of `path` whose names start with a `from` prefix into the
/// variables named with the matching `to` prefix; every variable under a `to`
/// prefix must be found. Returns how many tensors were copied.
pub fn load_mapped(vs: &VarStore, path: &Path, map: &[(&str, &str)]) -> Result<usize> {
    let file = read_tensors(path)?;
    let vars = vs.variables();
    let mut copied = 0;
    for (from, to) in map {
        let mut wanted: Vec<&String> = vars.keys().filter(|k| k.starts_with(to)).collect();
        wanted.sort();
        for name in wanted {
            let src_name = format!("{from}{}", &name[to.len()..]);
            let src = file.get(&src_name).with_context(|| {
                format!(
                    "{}: no tensor {src_name} (needed for {name})",
                    path.display()
                )
            })?;
            copy_checked(name, &vars[name], src, path)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Loads every variable of `vs` outside the `fresh` prefixes from a file
/// that may hold more (a pre-training checkpoint with decoders): each must be
/// present with its shape. Returns how many tensors were copied.
pub fn load_matching(vs: &VarStore, path: &Path, fresh: &[&str]) -> Result<usize> {
    let file = read_tensors(path)?;
    let vars = vs.variables();
    let mut wanted: Vec<&String> = vars
        .keys()
        .filter(|k| !fresh.iter().any(|p| k.starts_with(p)))
        .collect();
    wanted.sort();
    let missing: Vec<&String> = wanted
        .iter()
        .copied()
        .filter(|k| !file.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} lacks {} of the model's tensors ({})",
            path.display(),
            missing.len(),
            head(&missing)
        );
    }
    for name in &wanted {
        copy_checked(name, &vars[*name], &file[*name], path)?;
    }
    Ok(wanted.len())
}

fn head(names: &[&String]) -> String {
    let mut s: Vec<&str> = names.iter().take(5).map(|n| n.as_str()).collect();
    if names.len() > 5 {
        s.push("...");
    }
    s.join(", ")
}
