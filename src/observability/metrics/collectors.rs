//! What is read at scrape time: the application's state and the process's own figures.

use super::*;

// ---------------------------------------------------------------------------------------
// Read at scrape time
// ---------------------------------------------------------------------------------------

/// `gatehouse_provider_up` and `gatehouse_sessions_active`.
pub(super) struct StateCollector {
    pub(super) providers: Arc<ArcSwap<Providers>>,
    pub(super) store: Arc<dyn StoreHealth>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "gatehouse_provider_up",
                "1 when the provider's metadata and keys are loaded",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (name, provider) in &self.providers.load().by_name {
                let labels = [("provider", name.as_str())];
                ConstGauge::new(i64::from(provider.is_ready()))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        // The sessions held in this instance's session cache: the sessions used lately (at
        // most session.cache_entries); 0 without a cache. No store scan.
        let active = self
            .store
            .cache_statistics()
            .map_or(0, |statistics| statistics.entries as i64);
        let gauge = ConstGauge::new(active);
        gauge.encode(encoder.encode_descriptor(
            "gatehouse_sessions_active",
            "Sessions held in this instance's session cache (used lately); 0 without a cache",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}

/// `process_*` from /proc (Linux); nothing elsewhere.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = read_process() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let resident = ConstGauge::new(process.resident_bytes);
        resident.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            resident.metric_type(),
        )?)?;
        if let Some(fds) = process.open_fds {
            let fds = ConstGauge::new(fds);
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: Option<i64>,
}

fn read_process() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after it.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: i64 = statm.split(' ').nth(1)?.trim().parse().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as i64);
    Some(ProcessStats {
        cpu_seconds: ticks / per_second.max(1) as f64,
        resident_bytes: resident_pages * page.max(1) as i64,
        open_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_statistics_are_read_on_linux() {
        let process = read_process().expect("/proc is readable");
        assert!(process.resident_bytes > 0);
        assert!(process.open_fds.is_some_and(|fds| fds > 0));
    }
}
