//! What security costs, in one run: the strong content digest (BLAKE3, computed by
//! transferd over every byte beside the MD5) and TLS. Uploads alternate between a
//! plaintext server and a TLS one (a certificate made for the run), so both see the
//! same machine state.

use anyhow::{Context, Result, bail};
use transfer_service::upload::content_digest::Blake3Stream;

use crate::ceilings::random_bytes;
use crate::report::{Samples, load_average};
use crate::{Bench, MIB, settle, transfer};

/// The service's streaming BLAKE3 on one core, in MiB/s.
pub fn blake3_mib_per_sec(bytes: u64) -> f64 {
    let buf = random_bytes(4 << 20);
    let started = std::time::Instant::now();
    let mut stream = Blake3Stream::new();
    for _ in 0..bytes / buf.len() as u64 {
        stream.update(&buf);
    }
    std::hint::black_box(stream.finalize());
    bytes as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

/// SHA-256 (the other candidate for the content identity; with SHA-NI where the CPU
/// has it) on one core, in MiB/s.
pub fn sha256_mib_per_sec(bytes: u64) -> f64 {
    use sha2::Digest;
    let buf = random_bytes(4 << 20);
    let started = std::time::Instant::now();
    let mut hasher = sha2::Sha256::new();
    for _ in 0..bytes / buf.len() as u64 {
        hasher.update(&buf);
    }
    std::hint::black_box(hasher.finalize());
    bytes as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

/// A CA made for the run and a server certificate for `localhost` it signed, written
/// to `dir`: (CA, server certificate, server key) paths.
fn certificates(dir: &std::path::Path) -> Result<[std::path::PathBuf; 3]> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?).context("making a CA")?;
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&key, &ca)
        .context("signing the server certificate")?;
    let paths = [
        dir.join("bench-ca.pem"),
        dir.join("bench-server.pem"),
        dir.join("bench-server-key.pem"),
    ];
    std::fs::write(&paths[0], ca.pem())?;
    std::fs::write(&paths[1], server.pem())?;
    std::fs::write(&paths[2], key.serialize_pem())?;
    Ok(paths)
}

pub async fn section(bench: &mut Bench) -> Result<()> {
    let size = bench.plan.size;
    let file = bench.file(size)?;
    let gib = size as f64 / (1u64 << 30) as f64;
    settle().await;
    let mut blake3 = Samples::default();
    let mut sha256 = Samples::default();
    for _ in 0..3 {
        let load = load_average();
        blake3.push(blake3_mib_per_sec(512 * MIB), load);
        sha256.push(sha256_mib_per_sec(512 * MIB), load);
    }
    let blake3_cpu_per_gib = 1024.0 / blake3.median();
    let sha256_cpu_per_gib = 1024.0 / sha256.median();
    let [ca, cert, key] = certificates(&bench.work)?;
    let ca = std::fs::read(&ca)?;
    let tls_flags = [
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];

    let mut plain_rate = Samples::default();
    let mut plain_cpu = Samples::default();
    let mut tls_rate = Samples::default();
    let mut tls_cpu = Samples::default();
    for run in 1..=bench.plan.runs {
        println!("security run {run} of {}", bench.plan.runs);
        for tls in [false, true] {
            let server = match tls {
                false => bench.server(&[]).await?,
                true => bench.server(&tls_flags).await?,
            };
            let mut config = match tls {
                false => bench.client(&server.endpoint()),
                true => bench.client(&format!("https://localhost:{}", server.addr.port())),
            };
            if tls {
                config.ca_certificate = Some(ca.clone());
            }
            let cpu_before = server.cpu_seconds()?;
            let load = load_average();
            let up = transfer::upload(config, &file).await?;
            let cpu = server.cpu_seconds()? - cpu_before;
            if up.instant {
                bail!("a fresh server already had the content");
            }
            let (rate, cpu_per_gib) = match tls {
                false => (&mut plain_rate, &mut plain_cpu),
                true => (&mut tls_rate, &mut tls_cpu),
            };
            rate.push(Bench::mib_per_sec(size, up.total), load);
            cpu_per_gib.push(cpu / gib, load);
            server.stop().await;
            settle().await;
        }
    }

    // What the digest adds to what transferd would spend without it.
    let without_digest = plain_cpu.median() - blake3_cpu_per_gib;
    let digest_share = 100.0 * blake3_cpu_per_gib / without_digest;
    let sha256_share = 100.0 * sha256_cpu_per_gib / without_digest;
    let tls_extra = 100.0 * (tls_cpu.median() / plain_cpu.median() - 1.0);
    let report = &mut bench.report;
    report.section(format!(
        "What security costs: {} MiB fresh single-pass uploads on loopback, plaintext and TLS alternated",
        size >> 20
    ));
    report.row(
        "BLAKE3 (the content identity) on one core, as transferd computes it",
        &blake3,
        "MiB/s",
        format!(
            "{blake3_cpu_per_gib:.2} CPU-s/GiB: +{digest_share:.0}% on the rest of transferd's CPU per GiB below (target ≤ 15%)"
        ),
    );
    report.row(
        "SHA-256 on one core (the other candidate, not used)",
        &sha256,
        "MiB/s",
        format!("{sha256_cpu_per_gib:.2} CPU-s/GiB: would add +{sha256_share:.0}%"),
    );
    report.row("fresh upload, plaintext", &plain_rate, "MiB/s", "");
    report.row(
        "fresh upload, TLS (rustls, ring)",
        &tls_rate,
        "MiB/s",
        format!("{:.2}× plaintext", tls_rate.median() / plain_rate.median()),
    );
    report.row(
        "transferd CPU per GiB received, plaintext",
        &plain_cpu,
        "CPU-s",
        "MD5, BLAKE3, CRC32C, copies, syncs",
    );
    report.row(
        "transferd CPU per GiB received, TLS",
        &tls_cpu,
        "CPU-s",
        format!("{tls_extra:+.0}% for TLS (target ≤ 20%)"),
    );
    Ok(())
}
