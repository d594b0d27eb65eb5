//! What a resume costs: an upload whose connection is cut halfway, against the same
//! upload uncut, both through the same counting proxy.

use anyhow::{Result, bail};

use crate::link::{Link, LinkProxy};
use crate::report::{Samples, load_average};
use crate::{Bench, MIB, settle, transfer};

/// Bytes the client sends to the server for one upload of `file` through a proxy that
/// cuts the first connection after `cut_after` bytes (or never).
async fn bytes_sent(bench: &Bench, file: &std::path::Path, cut_after: Option<u64>) -> Result<u64> {
    let server = bench.server(&[]).await?;
    let link = Link {
        cut_first_after: cut_after,
        ..Link::default()
    };
    let proxy = LinkProxy::start(server.addr, link).await?;
    let up = transfer::upload(bench.client(&format!("http://{}", proxy.addr)), file).await?;
    if up.instant {
        bail!("a fresh server already had the content");
    }
    let sent = proxy.upstream_bytes();
    drop(proxy);
    server.stop().await;
    settle().await;
    Ok(sent)
}

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.size;
    let file = bench.file(size)?;
    let mut extra = Samples::default();
    for _ in 0..bench.plan.runs {
        let load = load_average();
        let whole = bytes_sent(bench, &file, None).await?;
        let cut = bytes_sent(bench, &file, Some(size / 2)).await?;
        extra.push(cut.saturating_sub(whole) as f64 / MIB as f64, load);
    }
    let report = &mut bench.report;
    report.section(format!(
        "Resume: {} MiB upload, connection cut at 50%, resumed by the client library",
        size >> 20
    ));
    report.row(
        "bytes sent beyond an uncut upload",
        &extra,
        "MiB",
        "bound: window 64 MiB",
    );
    Ok(())
}
