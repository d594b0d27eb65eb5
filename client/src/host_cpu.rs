//! How much of this host's CPU time goes idle: more connections cost CPU (more streams
//! to serve, more copies), so a transfer tries them only while some is spare.

/// Reads the share of CPU time that went idle between two readings.
pub(crate) trait IdleCpu: Send + std::fmt::Debug {
    /// The share of all CPUs' time idle since the last call (the first call: since
    /// boot); `None` where this host does not say.
    fn idle_share(&mut self) -> Option<f64>;
}

/// Linux's `/proc/stat` totals over all CPUs.
#[derive(Debug, Default)]
pub(crate) struct ProcStat {
    last: Option<CpuTimes>,
}

#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    idle: u64,
    total: u64,
}

impl IdleCpu for ProcStat {
    fn idle_share(&mut self) -> Option<f64> {
        let now = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| parse_cpu_line(&stat))?;
        let before = self
            .last
            .replace(now)
            .unwrap_or(CpuTimes { idle: 0, total: 0 });
        let total = now.total.checked_sub(before.total).filter(|t| *t > 0)?;
        let idle = now.idle.saturating_sub(before.idle);
        Some(idle as f64 / total as f64)
    }
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal
/// ...`, in clock ticks; idle and iowait count as idle.
fn parse_cpu_line(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map_while(|f| f.parse().ok()).take(8).collect();
    if ticks.len() < 4 {
        return None;
    }
    let idle = ticks[3] + ticks.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        idle,
        total: ticks.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_counts_idle_and_iowait_as_idle() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        let times = parse_cpu_line(stat).unwrap();
        assert_eq!(times.idle, 840);
        assert_eq!(times.total, 1000);
    }

    #[test]
    fn a_line_that_is_not_the_cpu_totals_says_nothing() {
        assert!(parse_cpu_line("intr 1 2 3\n").is_none());
        assert!(parse_cpu_line("cpu 1 2\n").is_none());
    }

    #[test]
    fn this_host_says_a_share_between_none_and_all() {
        let mut cpu = ProcStat::default();
        if let Some(share) = cpu.idle_share() {
            assert!((0.0..=1.0).contains(&share), "{share}");
        }
    }
}
