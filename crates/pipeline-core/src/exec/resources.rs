//! What a step asks of the machine that runs it (CPUs, memory, GPUs, time
//! limit), and the Slurm forms of memory and time the manifests use. The
//! executors read it; the pipeline file fills it.

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;

/// What a step asks of the machine that runs it. Not part of the fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub cpus: u32,
    pub mem_mb: u64,
    pub gpus: u32,
    pub time_min: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1,
            mem_mb: 2048,
            gpus: 0,
            time_min: 60,
        }
    }
}

/// Memory as Slurm writes it: `8G`, `512M`, `1T`, or a number of megabytes.
pub fn parse_mem(v: &Value) -> Result<u64> {
    let s = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .filter(|&n| n > 0)
                .context("resources.mem: a positive whole number of MB")
        }
        Value::String(s) => s.trim().to_ascii_uppercase(),
        _ => bail!("resources.mem: e.g. 8G, 512M or a number of MB"),
    };
    let s = s.strip_suffix('B').unwrap_or(&s);
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1.0 / 1024.0),
        Some('M') => (&s[..s.len() - 1], 1.0),
        Some('G') => (&s[..s.len() - 1], 1024.0),
        Some('T') => (&s[..s.len() - 1], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| {
            anyhow!("resources.mem '{s}': a positive size, e.g. 8G, 512M or a number of MB")
        })?;
    Ok((n * mult).ceil() as u64)
}

/// A time limit as Slurm writes it: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn parse_time(v: &Value) -> Result<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64().context("resources.time: minutes"),
        Value::String(s) => s.trim().to_string(),
        _ => bail!("resources.time: e.g. 02:00:00 or 1-12:00:00"),
    };
    let bad = || anyhow!("resources.time '{s}': e.g. 90, 02:00:00 or 1-12:00:00");
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().map_err(|_| bad())?, r),
        None => (0, s.as_str()),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let (h, m, sec) = match (s.contains('-'), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, sec]) => (0, *m, *sec),
        (_, [h, m, sec]) => (*h, *m, *sec),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        _ => return Err(bad()),
    };
    Ok(days * 24 * 60 + h * 60 + m + sec.div_ceil(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_and_memory_forms() {
        let t = |s: &str| parse_time(&Value::String(s.into())).unwrap();
        assert_eq!(t("90"), 90);
        assert_eq!(t("02:00:00"), 120);
        assert_eq!(t("1-12:00:00"), 36 * 60);
        assert_eq!(t("1-2"), 26 * 60);
        let m = |s: &str| parse_mem(&Value::String(s.into())).unwrap();
        assert_eq!(m("8G"), 8192);
        assert_eq!(m("512M"), 512);
        assert_eq!(m("100"), 100);
        assert!(parse_mem(&Value::String("lots".into())).is_err());
        for bad in ["-5G", "0", "0M", "-1", "NaNG", "infM"] {
            let e = parse_mem(&Value::String(bad.into())).unwrap_err();
            assert!(e.to_string().contains("a positive size"), "{bad}: {e}");
        }
        assert!(parse_mem(&serde_yaml::from_str("-5").unwrap()).is_err());
        assert!(parse_mem(&serde_yaml::from_str("0").unwrap()).is_err());
    }
}
