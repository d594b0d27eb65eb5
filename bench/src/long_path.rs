//! Long paths: one connection against several ("striping"). On each link model: raw TCP
//! on one connection (its window per round trip is the ceiling) and on four, tus in one
//! request, and Transfer's upload and download with one connection and striped (the
//! client's default: it decides how many).

use std::time::Duration;

use anyhow::{Result, bail};

use crate::ceilings::{tcp_send_mib_per_sec, tcp_send_parallel_mib_per_sec, tcp_sink};
use crate::link::{Link, LinkProxy};
use crate::report::{Samples, load_average};
use crate::slow_link::GIGABIT;
use crate::{Bench, MIB, settle, transfer, tus};

/// The link models: 50 and 250 ms round trips, uncapped and at 1 Gbit/s behind a
/// 32 MiB queue.
pub fn links() -> Vec<Link> {
    let capped = |one_way_ms| Link {
        queue: Some(32 * MIB),
        ..Link::delayed(Duration::from_millis(one_way_ms), Some(GIGABIT))
    };
    vec![
        Link::delayed(Duration::from_millis(25), None),
        Link::delayed(Duration::from_millis(125), None),
        capped(25),
        capped(125),
    ]
}

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.link_size;
    let file = bench.file(size)?;
    let sink = tcp_sink().await?;
    let tus_server = match bench.plan.tus {
        true => Some(tus::TusServer::start(&bench.work).await?),
        false => None,
    };
    let download_to = bench.work.join("long-path-download.bin");
    let wanted = |link: &Link| {
        let rtt = link.one_way_delay.as_millis() as u64 * 2;
        bench.plan.long_path_rtts.is_empty() || bench.plan.long_path_rtts.contains(&rtt)
    };
    for link in links().into_iter().filter(wanted) {
        println!("link: {}", link.describe());
        let [
            mut raw,
            mut raw_four,
            mut tus_one,
            mut up_one,
            mut up_striped,
            mut up_four,
            mut down_one,
            mut down_striped,
            mut down_four,
        ] = std::array::from_fn(|_| Samples::default());
        let mut up_connections = Vec::new();
        let mut down_connections = Vec::new();
        for _ in 0..bench.plan.runs {
            let proxy = LinkProxy::start(sink, link).await?;
            let load = load_average();
            raw.push(tcp_send_mib_per_sec(proxy.addr, size).await?, load);
            drop(proxy);
            settle().await;
            let proxy = LinkProxy::start(sink, link).await?;
            let load = load_average();
            raw_four.push(
                tcp_send_parallel_mib_per_sec(proxy.addr, size, 4).await?,
                load,
            );
            drop(proxy);
            settle().await;

            if let Some(tus) = &tus_server {
                let proxy = LinkProxy::start(tus.addr, link).await?;
                let load = load_average();
                let seconds = tus::upload(proxy.addr, &file, None).await?;
                tus_one.push(Bench::mib_per_sec(size, seconds), load);
                drop(proxy);
                tus.clear()?;
                settle().await;
            }

            let uploads = [
                (1, 1, &mut up_one),
                (4, 1, &mut up_striped),
                (4, 4, &mut up_four),
            ];
            for (connections, starting, samples) in uploads {
                let server = bench.server(&[]).await?;
                let proxy = LinkProxy::start(server.addr, link).await?;
                let mut config = bench.client(&format!("http://{}", proxy.addr));
                config.connections_per_file = connections;
                config.starting_connections = starting;
                let load = load_average();
                let up = transfer::upload(config, &file).await?;
                if up.instant {
                    bail!("a fresh server already had the content");
                }
                samples.push(Bench::mib_per_sec(size, up.total), load);
                if connections > 1 && starting == 1 {
                    up_connections.push(up.connections);
                }
                drop(proxy);
                server.stop().await;
                settle().await;
            }

            let server = bench.server(&[]).await?;
            let stored = transfer::upload(bench.client(&server.endpoint()), &file).await?;
            let downloads = [
                (1, 1, &mut down_one),
                (4, 1, &mut down_striped),
                (4, 4, &mut down_four),
            ];
            for (connections, starting, samples) in downloads {
                let proxy = LinkProxy::start(server.addr, link).await?;
                let mut config = bench.client(&format!("http://{}", proxy.addr));
                config.connections_per_file = connections;
                config.starting_connections = starting;
                let load = load_average();
                let (seconds, used) =
                    transfer::download_over(config, &stored.file_id, &download_to).await?;
                samples.push(Bench::mib_per_sec(size, seconds), load);
                if connections > 1 && starting == 1 {
                    down_connections.push(used);
                }
                drop(proxy);
                settle().await;
            }
            server.stop().await;
        }
        let ceiling = raw.median();
        let share = |rate: f64| format!("{:.2}× one connection's raw TCP", rate / ceiling);
        let report = &mut bench.report;
        report.section(format!(
            "Long path {}: {} MiB, one connection and striped",
            link.describe(),
            size >> 20
        ));
        report.row("raw TCP, one connection (its ceiling)", &raw, "MiB/s", "");
        report.row(
            "raw TCP, four connections",
            &raw_four,
            "MiB/s",
            share(raw_four.median()),
        );
        if !tus_one.is_empty() {
            report.row(
                "tus: one request",
                &tus_one,
                "MiB/s",
                share(tus_one.median()),
            );
        }
        report.row(
            "Transfer upload, one connection",
            &up_one,
            "MiB/s",
            share(up_one.median()),
        );
        report.row(
            "Transfer upload, striped (client default)",
            &up_striped,
            "MiB/s",
            format!(
                "{}; connections {up_connections:?}",
                share(up_striped.median())
            ),
        );
        report.row(
            "Transfer upload, four connections from the start (its steady state)",
            &up_four,
            "MiB/s",
            share(up_four.median()),
        );
        report.row(
            "Transfer download, one connection",
            &down_one,
            "MiB/s",
            share(down_one.median()),
        );
        report.row(
            "Transfer download, striped (client default)",
            &down_striped,
            "MiB/s",
            format!(
                "{}; connections {down_connections:?}",
                share(down_striped.median())
            ),
        );
        report.row(
            "Transfer download, four connections from the start (its steady state)",
            &down_four,
            "MiB/s",
            share(down_four.median()),
        );
    }
    Ok(())
}
