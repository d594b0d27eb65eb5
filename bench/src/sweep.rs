//! Sweeps of the settings that decide upload speed (chunk size, window in bytes, HTTP/2 windows),
//! on loopback and at 50 ms round trip, to choose the defaults from figures.

use std::time::Duration;

use anyhow::{Result, bail};
use transfer_client::ClientConfig;

use crate::link::{Link, LinkProxy};
use crate::report::{Samples, load_average};
use crate::{Bench, MIB, settle, transfer};

/// One point of a sweep: how it changes the client's settings and the server's flags.
struct Point {
    label: String,
    client: Box<dyn Fn(&mut ClientConfig)>,
    server: Vec<String>,
}

fn points() -> Vec<Point> {
    let mut points = Vec::new();
    for chunk in [1u32, 4, 8, 16] {
        points.push(Point {
            label: format!("chunk {chunk} MiB, window 64 MiB"),
            client: Box::new(move |c| c.chunk_size = chunk << 20),
            server: Vec::new(),
        });
    }
    for window in [4u64, 8, 16, 32, 64, 128] {
        points.push(Point {
            label: format!("window {window} MiB, chunk 4 MiB"),
            client: Box::new(move |c| c.window_bytes = window << 20),
            server: vec!["--max-window-bytes".into(), (128u64 << 20).to_string()],
        });
    }
    for (stream, connection) in [(1u32, 2u32), (4, 8), (16, 32), (32, 64), (64, 128)] {
        points.push(Point {
            label: format!("HTTP/2 windows {stream}/{connection} MiB (stream/connection)"),
            client: Box::new(move |c| {
                c.http2_stream_window = stream << 20;
                c.http2_connection_window = connection << 20;
            }),
            server: vec![
                "--http2-stream-window".into(),
                (stream << 20).to_string(),
                "--http2-connection-window".into(),
                (connection << 20).to_string(),
            ],
        });
    }
    points.push(Point {
        label: "HTTP/2 adaptive windows".into(),
        client: Box::new(|c| c.http2_adaptive_window = true),
        server: vec!["--http2-adaptive-window".into(), "true".into()],
    });
    points
}

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.link_size;
    let file = bench.file(size)?;
    let links = [
        ("loopback", None),
        (
            "50 ms RTT",
            Some(Link::delayed(Duration::from_millis(25), None)),
        ),
    ];
    for (name, link) in links {
        let mut rows = Vec::new();
        for point in points() {
            let mut rate = Samples::default();
            for _ in 0..bench.plan.runs {
                let server = bench.server(&point.server).await?;
                let proxy = match link {
                    Some(link) => Some(LinkProxy::start(server.addr, link).await?),
                    None => None,
                };
                let addr = proxy.as_ref().map_or(server.addr, |p| p.addr);
                let mut config = bench.client(&format!("http://{addr}"));
                (point.client)(&mut config);
                let load = load_average();
                let up = transfer::upload(config, &file).await?;
                if up.instant {
                    bail!("a fresh server already had the content");
                }
                rate.push(Bench::mib_per_sec(size, up.transfer), load);
                drop(proxy);
                server.stop().await;
                settle().await;
            }
            println!("{name}, {}: {:.0} MiB/s", point.label, rate.median());
            rows.push((point.label, rate));
        }
        bench.report.section(format!(
            "Sweep on {name}: transfer phase of a {} MiB upload (other settings at their defaults)",
            size / MIB
        ));
        for (label, rate) in rows {
            let note = bench.of_md5(rate.median());
            bench.report.row(label, &rate, "MiB/s", note);
        }
    }
    Ok(())
}
