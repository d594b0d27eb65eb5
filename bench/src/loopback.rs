//! The main figures on loopback: a fresh upload in a single pass (the default) and
//! hashing first (two passes: hashing and transfer phase apart), the same file again
//! (instant), a verified download, tus on the same file, and transferd's CPU time and
//! peak memory.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::report::{Samples, load_average, median};
use crate::{Bench, MIB, settle, transfer, tus};

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.size;
    let file = bench.file(size)?;
    let download_to = bench.work.join("download.bin");
    let tus_server = match bench.plan.tus {
        true => Some(tus::TusServer::start(&bench.work).await?),
        false => None,
    };
    let mut single_pass = Samples::default();
    let mut hashing = Samples::default();
    let mut transfer_rate = Samples::default();
    let mut total_rate = Samples::default();
    let mut cpu_per_gib = Samples::default();
    let mut client_cpu_single = Samples::default();
    let mut client_cpu_hash_first = Samples::default();
    let own_cpu = || crate::transferd::process_cpu_seconds(std::process::id());
    let mut instant_total = Samples::default();
    let mut instant_check = Samples::default();
    let mut download_rate = Samples::default();
    let mut tus_single = Samples::default();
    let mut tus_chunked = Samples::default();
    let gib = size as f64 / (1u64 << 30) as f64;

    for run in 1..=bench.plan.runs {
        println!("run {run} of {}", bench.plan.runs);
        // Hashing first (two passes), on a server of its own.
        let server = bench.server(&[]).await?;
        let mut config = bench.client(&server.endpoint());
        config.hash_first = true;
        let load = load_average();
        let client_before = own_cpu()?;
        let up = transfer::upload(config, &file).await?;
        client_cpu_hash_first.push((own_cpu()? - client_before) / gib, load);
        if up.instant {
            bail!("a fresh server already had the content");
        }
        hashing.push(up.hashing, load);
        transfer_rate.push(Bench::mib_per_sec(size, up.transfer), load);
        total_rate.push(Bench::mib_per_sec(size, up.total), load);
        server.stop().await;
        settle().await;

        // The default: a single pass.
        let server = bench.server(&[]).await?;
        let config = bench.client(&server.endpoint());
        let cpu_before = server.cpu_seconds()?;
        let load = load_average();
        let client_before = own_cpu()?;
        let up = transfer::upload(config.clone(), &file).await?;
        client_cpu_single.push((own_cpu()? - client_before) / gib, load);
        let cpu = server.cpu_seconds()? - cpu_before;
        if up.instant {
            bail!("a fresh server already had the content");
        }
        single_pass.push(Bench::mib_per_sec(size, up.total), load);
        cpu_per_gib.push(cpu / gib, load);
        settle().await;

        let load = load_average();
        let again = transfer::upload(config.clone(), &file).await?;
        if !again.instant {
            bail!("the second upload of the same file was not instant");
        }
        instant_total.push(again.total, load);
        let md5: [u8; 16] = again
            .md5
            .as_slice()
            .try_into()
            .context("the server's MD5 is not 16 bytes")?;
        let load = load_average();
        let checks = transfer::instant_check_seconds(config.clone(), size, md5, 20).await?;
        instant_check.push(median(&checks) * 1000.0, load);

        let load = load_average();
        let seconds = transfer::download(config, &up.file_id, &download_to).await?;
        download_rate.push(Bench::mib_per_sec(size, seconds), load);
        server.stop().await;
        settle().await;

        if let Some(tus) = &tus_server {
            let load = load_average();
            let seconds = tus::upload(tus.addr, &file, None).await?;
            tus_single.push(Bench::mib_per_sec(size, seconds), load);
            tus.clear()?;
            settle().await;
            let load = load_average();
            let seconds = tus::upload(tus.addr, &file, Some(8 * MIB)).await?;
            tus_chunked.push(Bench::mib_per_sec(size, seconds), load);
            tus.clear()?;
            settle().await;
        }
    }

    let md5_cpu_per_gib = 1024.0 / bench.md5_ceiling;
    let transfer_note = bench.of_md5(transfer_rate.median());
    let download_note = bench.of_md5(download_rate.median());
    let versus_tus = match tus_single.is_empty() {
        true => String::new(),
        false => format!(
            "; {:.2}× tus in one request",
            single_pass.median() / tus_single.median()
        ),
    };
    let single_note = format!("{}{versus_tus}", bench.of_md5(single_pass.median()));
    let report = &mut bench.report;
    report.section(format!(
        "Loopback: {} MiB, client library defaults (chunk 4 MiB, window 64 MiB), embedded ledger",
        size >> 20
    ));
    report.row(
        "fresh upload, single pass (the default), in all",
        &single_pass,
        "MiB/s",
        single_note,
    );
    report.row(
        "fresh upload, hash first (two passes), in all",
        &total_rate,
        "MiB/s",
        "",
    );
    report.row(
        "hash first: client reads and hashes the file, CheckUpload",
        &hashing,
        "s",
        "the first pass",
    );
    report.row(
        "hash first: transfer phase (chunks, CRC32C, server MD5, durable acks)",
        &transfer_rate,
        "MiB/s",
        transfer_note,
    );
    if !tus_single.is_empty() {
        report.row(
            "tus: one request (@tus/server + file-store, tus-js-client)",
            &tus_single,
            "MiB/s",
            "verifies nothing: no checksum at all",
        );
        report.row(
            "tus: 8 MiB chunks",
            &tus_chunked,
            "MiB/s",
            "verifies nothing: no checksum at all",
        );
    }
    report.row(
        "transferd CPU per GiB received (single-pass upload)",
        &cpu_per_gib,
        "CPU-s",
        format!(
            "{:.2}× MD5's own cost ({md5_cpu_per_gib:.2} CPU-s/GiB)",
            cpu_per_gib.median() / md5_cpu_per_gib
        ),
    );
    let beyond_md5 = cpu_per_gib.less(md5_cpu_per_gib);
    report.row(
        "transferd CPU per GiB beyond its MD5 (target ≤ 0.45)",
        &beyond_md5,
        "CPU-s",
        format!(
            "{}: receiving, CRC32C, writing, the ledger",
            match beyond_md5.median() <= 0.45 {
                true => "met",
                false => "not met",
            }
        ),
    );
    report.row(
        "client library CPU per GiB sent, single pass",
        &client_cpu_single,
        "CPU-s",
        "includes its MD5 of the file",
    );
    report.row(
        "client library CPU per GiB sent, hash first",
        &client_cpu_hash_first,
        "CPU-s",
        "",
    );
    report.row(
        "instant upload of the same file: client total",
        &instant_total,
        "s",
        "client hashing + one CheckUpload",
    );
    report.row(
        "instant upload: CheckUpload round trip, warm connection",
        &instant_check,
        "ms",
        "median of 20; bounds the server's time",
    );
    report.row(
        "download with CRC32C per piece and whole-file MD5",
        &download_rate,
        "MiB/s",
        download_note,
    );
    Ok(())
}

/// transferd's peak RSS during an upload of the main size and of the big size.
pub async fn memory_section(bench: &mut Bench) -> Result<()> {
    let mut rows = Vec::new();
    for size in [bench.plan.size, bench.plan.big_size] {
        let file = bench.file(size)?;
        let mut rss = Samples::default();
        for _ in 0..bench.plan.runs {
            let server = bench.server(&[]).await?;
            let load = load_average();
            transfer::upload(bench.client(&server.endpoint()), &file).await?;
            rss.push(server.peak_rss()? as f64 / MIB as f64, load);
            server.stop().await;
            settle().await;
        }
        // The big file is made for this alone; the main one is used again.
        if size != bench.plan.size {
            crate::remove(&file);
        }
        settle().await;
        rows.push((size, rss));
    }
    let (uploads, size) = if bench.plan.quick {
        (16, 16 << 20)
    } else {
        (50, 64 << 20)
    };
    let (peak, kept) = burst(bench, uploads, size).await?;
    let report = &mut bench.report;
    report.section("Memory: transferd peak RSS (VmHWM) during one upload");
    for (size, rss) in rows {
        report.row(
            format!("upload of {} MiB", size >> 20),
            &rss,
            "MiB",
            "bound: 64 MiB + window 64 MiB = 128 MiB (the max counts)",
        );
    }
    report.row(
        format!(
            "peak during {uploads} uploads of {} MiB at once",
            size >> 20
        ),
        &peak,
        "MiB",
        "each its own owner, so each sends every byte",
    );
    report.row(
        "kept 10 s after that burst (VmRSS)",
        &kept,
        "MiB",
        "what the allocator gave back once every client left",
    );
    Ok(())
}

/// transferd's peak RSS while `uploads` uploads of `size` bytes run at once (each for
/// an owner of its own, so none is instant), and its RSS 10 s after they all ended.
async fn burst(bench: &mut Bench, uploads: usize, size: u64) -> Result<(Samples, Samples)> {
    let file = bench.file(size)?;
    let (mut peak, mut kept) = (Samples::default(), Samples::default());
    for _ in 0..bench.plan.runs {
        let server = bench.server(&[]).await?;
        let load = load_average();
        let mut running = Vec::new();
        for i in 0..uploads {
            let mut config = bench.client(&server.endpoint());
            config.owner = Some(format!("burst-{i}"));
            let file = file.clone();
            running.push(tokio::spawn(async move {
                transfer::upload(config, &file).await
            }));
        }
        for upload in running {
            upload.await??;
        }
        peak.push(server.peak_rss()? as f64 / MIB as f64, load);
        tokio::time::sleep(Duration::from_secs(10)).await;
        kept.push(server.rss()? as f64 / MIB as f64, load);
        server.stop().await;
        settle().await;
    }
    Ok((peak, kept))
}
