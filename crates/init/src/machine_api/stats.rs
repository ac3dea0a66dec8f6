//! `Stats` and `Mounts` from procfs: memory, load, and each supervised
//! service's resident set and CPU time (its main process).

use procfs::{Current as _, LoadAverage, Meminfo};

/// Memory, load and per-service figures.
pub fn collect(services: &[(String, Option<u32>)]) -> api::v1::StatsResponse {
    let mut out = api::v1::StatsResponse::default();
    if let Ok(m) = Meminfo::current() {
        out.mem_total_bytes = m.mem_total;
        out.mem_available_bytes = m.mem_available.unwrap_or(m.mem_free);
    }
    if let Ok(l) = LoadAverage::current() {
        out.load1 = f64::from(l.one);
        out.load5 = f64::from(l.five);
        out.load15 = f64::from(l.fifteen);
    }
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let mut rows: Vec<(String, u32)> = vec![("init".to_string(), std::process::id())];
    rows.extend(
        services
            .iter()
            .filter_map(|(n, pid)| pid.map(|p| (n.clone(), p))),
    );
    for (service, pid) in rows {
        let Ok(stat) = procfs::process::Process::new(i32::try_from(pid).unwrap_or(i32::MAX))
            .and_then(|p| p.stat())
        else {
            continue;
        };
        out.services.push(api::v1::ProcessStats {
            service,
            rss_bytes: stat.rss.saturating_mul(page),
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            pid,
        });
    }
    out
}

/// Every mount of PID 1's namespace.
pub fn mounts() -> api::v1::MountsResponse {
    api::v1::MountsResponse {
        mounts: crate::mounts::current()
            .into_iter()
            .map(|m| api::v1::Mount {
                source: m.source,
                target: m.mount_point.display().to_string(),
                fstype: m.fstype,
                options: m.options,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn this_process_is_measured() {
        let s = collect(&[("self".into(), Some(std::process::id()))]);
        assert!(s.mem_total_bytes > s.mem_available_bytes);
        let me = s.services.iter().find(|p| p.service == "self").unwrap();
        assert!(me.rss_bytes > 1 << 20, "{me:?}");
        assert!(mounts().mounts.iter().any(|m| m.target == "/"));
    }
}
