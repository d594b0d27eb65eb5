//! A slow link: Transfer, tus and raw TCP through the same delaying, rate-capping proxy.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::ceilings::{tcp_send_mib_per_sec, tcp_sink};
use crate::link::{Link, LinkProxy};
use crate::report::{Samples, load_average};
use crate::{Bench, MIB, settle, transfer, tus};

/// 1 Gbit/s in bytes per second.
pub const GIGABIT: u64 = 125_000_000;

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.link_size;
    let file = bench.file(size)?;
    let sink = tcp_sink().await?;
    let tus_server = match bench.plan.tus {
        true => Some(tus::TusServer::start(&bench.work).await?),
        false => None,
    };
    let links = [
        Link::delayed(Duration::from_millis(10), None),
        Link::delayed(Duration::from_millis(10), Some(GIGABIT)),
        Link::delayed(Duration::from_millis(25), None),
        Link::delayed(Duration::from_millis(25), Some(GIGABIT)),
    ];
    for link in links {
        println!("link: {}", link.describe());
        let [
            mut raw,
            mut phase,
            mut total,
            mut hash_first,
            mut single,
            mut chunked,
        ] = std::array::from_fn(|_| Samples::default());
        for _ in 0..bench.plan.runs {
            let proxy = LinkProxy::start(sink, link).await?;
            let load = load_average();
            raw.push(tcp_send_mib_per_sec(proxy.addr, size).await?, load);
            drop(proxy);
            settle().await;

            let server = bench.server(&[]).await?;
            let proxy = LinkProxy::start(server.addr, link).await?;
            let load = load_average();
            let up =
                transfer::upload(bench.client(&format!("http://{}", proxy.addr)), &file).await?;
            if up.instant {
                bail!("a fresh server already had the content");
            }
            phase.push(Bench::mib_per_sec(size, up.transfer), load);
            total.push(Bench::mib_per_sec(size, up.total), load);
            drop(proxy);
            server.stop().await;
            settle().await;

            let server = bench.server(&[]).await?;
            let proxy = LinkProxy::start(server.addr, link).await?;
            let mut config = bench.client(&format!("http://{}", proxy.addr));
            config.hash_first = true;
            let load = load_average();
            let up = transfer::upload(config, &file).await?;
            hash_first.push(Bench::mib_per_sec(size, up.total), load);
            drop(proxy);
            server.stop().await;
            settle().await;

            if let Some(tus) = &tus_server {
                for (chunk, samples) in [(None, &mut single), (Some(8 * MIB), &mut chunked)] {
                    let proxy = LinkProxy::start(tus.addr, link).await?;
                    let load = load_average();
                    let seconds = tus::upload(proxy.addr, &file, chunk).await?;
                    samples.push(Bench::mib_per_sec(size, seconds), load);
                    drop(proxy);
                    tus.clear()?;
                    settle().await;
                }
            }
        }
        let share = |rate: f64| format!("{:.0}% of raw TCP", 100.0 * rate / raw.median());
        let report = &mut bench.report;
        report.section(format!(
            "Slow link {}: {} MiB upload through the delaying proxy",
            link.describe(),
            size >> 20
        ));
        report.row(
            "raw TCP through the proxy (the link's ceiling)",
            &raw,
            "MiB/s",
            "",
        );
        report.row(
            "Transfer: fresh upload, single pass (client defaults), in all",
            &total,
            "MiB/s",
            share(total.median()),
        );
        report.row(
            "Transfer: single pass, from the first chunk to completed",
            &phase,
            "MiB/s",
            share(phase.median()),
        );
        report.row(
            "Transfer: fresh upload, hash first (two passes), in all",
            &hash_first,
            "MiB/s",
            share(hash_first.median()),
        );
        if !single.is_empty() {
            report.row(
                "tus: one request",
                &single,
                "MiB/s",
                format!("{}; no checksum", share(single.median())),
            );
            report.row(
                "tus: 8 MiB chunks",
                &chunked,
                "MiB/s",
                format!(
                    "{}; Transfer in all is {:.1}× this",
                    share(chunked.median()),
                    total.median() / chunked.median()
                ),
            );
        }
    }
    Ok(())
}
