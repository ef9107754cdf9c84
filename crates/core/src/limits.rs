//! Resource limits of a process type: memory, CPU and process count. Defaults protect the
//! machine; `berth.toml` may raise or lower them within safe bounds.

use serde::{Deserialize, Serialize};

/// Default memory limit of one instance.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Default CPU share of one instance, in thousandths of a CPU.
pub const DEFAULT_CPU_MILLIS: u32 = 1000;
/// Default most processes and threads one instance may have.
pub const DEFAULT_PIDS: u32 = 256;

/// Smallest memory limit accepted: below this even a tiny runtime cannot start.
pub const MIN_MEMORY_BYTES: u64 = 32 << 20;
/// Largest memory limit accepted.
pub const MAX_MEMORY_BYTES: u64 = 64 << 30;
/// Smallest CPU share accepted (0.05 CPU).
pub const MIN_CPU_MILLIS: u32 = 50;
/// Largest CPU share accepted (64 CPUs).
pub const MAX_CPU_MILLIS: u32 = 64_000;
/// Smallest process limit accepted: a shell, the app and a few helpers.
pub const MIN_PIDS: u32 = 16;
/// Largest process limit accepted.
pub const MAX_PIDS: u32 = 32_768;

/// The limits one instance runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    /// Memory, bytes; the kernel kills the instance when it goes past.
    pub memory_bytes: u64,
    /// CPU time per wall-clock second, in thousandths of a CPU.
    pub cpu_millis: u32,
    /// Most processes and threads at once.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpu_millis: DEFAULT_CPU_MILLIS,
            pids: DEFAULT_PIDS,
        }
    }
}

/// Parses a memory size: a number of bytes, or a number with a unit `K`, `M`, `G` (binary
/// multiples; `Ki`/`KiB`, `MB`, … and lower case are accepted too): `"256M"`, `"1.5GiB"`.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like \"256M\" or \"1G\""))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kb" | "kib" => 1 << 10,
        "m" | "mi" | "mb" | "mib" => 1 << 20,
        "g" | "gi" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}; use K, M or G"
            ))
        }
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Renders a byte count the way users write it (`256M`, `1G`, `1536K`).
pub fn format_memory(bytes: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}M", bytes as f64 / (1u64 << 20) as f64);
    }
    format!("{bytes}")
}

/// Checks a memory limit against the safe bounds; the error names `field`.
pub fn check_memory(field: &str, bytes: u64) -> Result<(), String> {
    if bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "{field}: {} is below the minimum of {}",
            format_memory(bytes),
            format_memory(MIN_MEMORY_BYTES)
        ));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!(
            "{field}: {} is above the maximum of {}",
            format_memory(bytes),
            format_memory(MAX_MEMORY_BYTES)
        ));
    }
    Ok(())
}

/// Converts a CPU count (`0.5`, `2`) to thousandths, checking the bounds; the error names
/// `field`.
pub fn cpu_millis(field: &str, cpus: f64) -> Result<u32, String> {
    if !cpus.is_finite() {
        return Err(format!("{field}: {cpus} is not a number of CPUs"));
    }
    let millis = (cpus * 1000.0).round();
    if millis < MIN_CPU_MILLIS as f64 {
        return Err(format!(
            "{field}: {cpus} is below the minimum of {} CPU",
            MIN_CPU_MILLIS as f64 / 1000.0
        ));
    }
    if millis > MAX_CPU_MILLIS as f64 {
        return Err(format!(
            "{field}: {cpus} is above the maximum of {} CPUs",
            MAX_CPU_MILLIS / 1000
        ));
    }
    Ok(millis as u32)
}

/// Checks a process limit against the safe bounds; the error names `field`.
pub fn check_pids(field: &str, pids: u32) -> Result<(), String> {
    if pids < MIN_PIDS {
        return Err(format!(
            "{field}: {pids} is below the minimum of {MIN_PIDS}"
        ));
    }
    if pids > MAX_PIDS {
        return Err(format!(
            "{field}: {pids} is above the maximum of {MAX_PIDS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_units() {
        assert_eq!(parse_memory("256M").unwrap(), 256 << 20);
        assert_eq!(parse_memory("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("lots").unwrap_err().contains("not a size"));
        assert!(parse_memory("5T").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("").is_err());
    }

    #[test]
    fn bounds_name_the_field() {
        let e = check_memory("processes.web.memory", 1 << 20).unwrap_err();
        assert!(
            e.contains("processes.web.memory") && e.contains("32M"),
            "{e}"
        );
        assert!(cpu_millis("processes.web.cpus", 0.01).is_err());
        assert_eq!(cpu_millis("x", 0.5).unwrap(), 500);
        assert!(check_pids("processes.web.pids", 3).is_err());
        assert!(check_pids("processes.web.pids", 64).is_ok());
    }

    #[test]
    fn sizes_format_back() {
        assert_eq!(format_memory(512 << 20), "512M");
        assert_eq!(format_memory(2 << 30), "2G");
        assert_eq!(format_memory(1536 << 10), "1536K");
    }
}
