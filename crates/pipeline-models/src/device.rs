//! Where tensors live: CUDA when available unless told otherwise, through
//! `--device` or the `PIPELINE_DEVICE` environment variable.

use std::str::FromStr;

use anyhow::{bail, Result};
use tch::Device;

/// A device request: `cpu`, `cuda` or `auto` (CUDA when one is present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "auto" | "" => Ok(Self::Auto),
            other => bail!("unknown device '{other}': use cpu, cuda or auto"),
        }
    }
}

impl DeviceChoice {
    /// The request named by `PIPELINE_DEVICE`, `auto` when unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var("PIPELINE_DEVICE") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Self::Auto),
        }
    }

    /// Resolves the request; asking for CUDA where there is none is an error.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => bail!(
                "CUDA was requested but libtorch sees no CUDA device; use --device cpu (or PIPELINE_DEVICE=cpu)"
            ),
            Self::Auto => Ok(Device::cuda_if_available()),
        }
    }
}
