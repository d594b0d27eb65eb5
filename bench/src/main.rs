//! `transfer-bench`: Transfer measured against the machine's own limits and against
//! tus, in one run on one machine. Run it with `scripts/bench` (which builds the release
//! binaries and installs tus); `scripts/bench --quick` finishes in under two minutes.
//!
//! Every figure is the median of several runs with min and max and the load average
//! before each run; peers run interleaved with ours (A B A B …) so that a noisy machine
//! hurts both alike. Client and server share the machine, so the figures that matter
//! are ratios to ceilings measured in the same run.

#![forbid(unsafe_code)]

mod ceilings;
mod concurrent;
mod ledger;
mod link;
mod long_path;
mod loopback;
mod object_store;
mod pinning;
mod postgres;
mod replicas;
mod report;
mod resume;
mod security;
mod slow_link;
mod sweep;
mod transfer;
mod transferd;
mod tus;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use transfer_client::ClientConfig;

use crate::report::Report;
use crate::transferd::Transferd;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Parts of the benchmark, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Ceilings,
    Loopback,
    Memory,
    Resume,
    Concurrent,
    Ledger,
    SlowLink,
    LongPath,
    Sweep,
    Security,
    Replicas,
}

/// Transfer's benchmark: ceilings, loopback, memory, resume, many uploads, the ledger, a
/// slow link against tus and raw TCP, and sweeps of the settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "transfer-bench", version, about)]
struct Args {
    /// Small sizes and one run each: the whole benchmark in under two minutes.
    #[arg(long)]
    quick: bool,
    /// Size of the main upload and download [default: 1GiB; quick: 64MiB].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Size of the second upload for peak memory [default: 4GiB; quick: 256MiB].
    #[arg(long, value_parser = parse_size)]
    big_size: Option<u64>,
    /// Size of the uploads over the slow link and in the sweeps [default: --size; quick: 32MiB].
    #[arg(long, value_parser = parse_size)]
    link_size: Option<u64>,
    /// Runs of each measurement [default: 3; quick: 1].
    #[arg(long)]
    runs: Option<usize>,
    /// Uploads at once in the concurrency run [default: 200; quick: 50].
    #[arg(long)]
    concurrent: Option<usize>,
    /// Files already in the ledger when measuring `CheckUpload` [default: 1000000; quick: 50000].
    #[arg(long)]
    seeded_files: Option<u64>,
    /// Only the long-path links with these round trips, in ms (comma-separated; 50, 250).
    #[arg(long, value_delimiter = ',')]
    long_path_rtt: Vec<u64>,
    /// Only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Pin this program (the clients, the link proxy, the raw TCP sink) to core 0 and
    /// every server it starts (transferd, tus, PostgreSQL's and the object store's
    /// excepted) to core 1, so that client and server stop competing for one core.
    #[arg(long)]
    pin: bool,
    /// Leave tus out (it needs Node.js and `npm ci --prefix bench/tus`).
    #[arg(long)]
    no_tus: bool,
    /// PostgreSQL where fresh databases may be created.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    database_url: String,
    /// Where test files and data directories go (its disk is the one measured).
    #[arg(long, default_value = "target/bench-work")]
    work_dir: PathBuf,
    /// Also write the tables, the machine and the command as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 64MiB or 1GiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        _ => return Err(format!("{unit:?}: use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text} is too large"))
}

/// The settings of this run, with the quick-mode defaults applied.
pub struct Plan {
    pub size: u64,
    pub big_size: u64,
    pub link_size: u64,
    pub runs: usize,
    pub concurrent: usize,
    pub concurrent_size: usize,
    pub seeded_files: u64,
    pub ledger_chunks: u64,
    pub quick: bool,
    pub tus: bool,
    pub long_path_rtts: Vec<u64>,
    pub database_url: String,
}

impl Plan {
    fn from(args: &Args) -> Self {
        let quick = args.quick;
        let size = args.size.unwrap_or(if quick { 64 * MIB } else { GIB });
        Self {
            size,
            big_size: args
                .big_size
                .unwrap_or(if quick { 256 * MIB } else { 4 * GIB }),
            link_size: args
                .link_size
                .unwrap_or(if quick { 32 * MIB } else { size }),
            runs: args.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
            concurrent: args.concurrent.unwrap_or(if quick { 50 } else { 200 }),
            concurrent_size: if quick {
                MIB as usize
            } else {
                4 * MIB as usize
            },
            seeded_files: args
                .seeded_files
                .unwrap_or(if quick { 50_000 } else { 1_000_000 }),
            ledger_chunks: if quick { 1_500 } else { 6_000 },
            quick,
            tus: !args.no_tus,
            long_path_rtts: args.long_path_rtt.clone(),
            database_url: args.database_url.clone(),
        }
    }
}

/// What every part shares: the plan, the work directory, the report, and the MD5
/// ceiling that the service's figures are compared with.
pub struct Bench {
    pub plan: Plan,
    pub work: PathBuf,
    pub report: Report,
    /// MiB/s of MD5 on one core, measured in this run.
    pub md5_ceiling: f64,
}

impl Bench {
    /// A file of `size` random bytes in the work directory, made once and reused.
    pub fn file(&self, size: u64) -> Result<PathBuf> {
        let path = self.work.join(format!("random-{size}.bin"));
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            return Ok(path);
        }
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut rng = fastrand::Rng::new();
        let mut block = vec![0u8; 4 * MIB as usize];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            rng.fill(&mut block[..n]);
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        Ok(path)
    }

    /// A fresh transferd (fresh data directory, embedded ledger) with `extra` flags.
    pub async fn server(&self, extra: &[String]) -> Result<Transferd> {
        Transferd::start(&self.work, extra).await
    }

    /// The client library's default settings, for `endpoint`.
    pub fn client(&self, endpoint: &str) -> ClientConfig {
        ClientConfig::new(endpoint)
    }

    /// `bytes` in `seconds` as MiB/s.
    pub fn mib_per_sec(bytes: u64, seconds: f64) -> f64 {
        bytes as f64 / MIB as f64 / seconds
    }

    /// `rate` (MiB/s) as a share of the MD5 ceiling, for a note.
    pub fn of_md5(&self, rate: f64) -> String {
        format!("{:.0}% of MD5 ceiling", 100.0 * rate / self.md5_ceiling)
    }
}

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = read("/proc/sys/kernel/osrelease");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {memory_gib:.0} GiB RAM, Linux {}, commit {commit}",
        kernel.trim()
    )
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=transfer_client=debug` shows, among others, how many connections each
    // transfer stripes over and why.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Err(error) = run(Args::parse()).await {
        eprintln!("transfer-bench: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::from(&args);
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work = args.work_dir.canonicalize()?;
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let mut machine = machine();
    if args.pin {
        pinning::pin_self()?;
        machine += "; pinned: clients on core 0, servers on core 1";
    }
    println!("transfer-bench on {machine}");
    println!(
        "sizes: main {} MiB, big {} MiB, link {} MiB; {} run(s) each",
        plan.size / MIB,
        plan.big_size / MIB,
        plan.link_size / MIB,
        plan.runs
    );
    if plan.tus
        && let Some(reason) = tus::unavailable()
    {
        anyhow::bail!("{reason}; or leave tus out with --no-tus");
    }

    let mut bench = Bench {
        plan,
        work,
        report: Report::default(),
        md5_ceiling: f64::NAN,
    };
    let started = std::time::Instant::now();
    // The service's figures are ratios to MD5: measure it even when ceilings are skipped.
    if wants(Part::Ceilings) {
        ceilings::section(&mut bench).await?;
    } else {
        bench.md5_ceiling = ceilings::md5_mib_per_sec(512 * MIB);
    }
    if wants(Part::Loopback) {
        loopback::section(&mut bench).await?;
    }
    if wants(Part::Memory) {
        loopback::memory_section(&mut bench).await?;
    }
    if wants(Part::Resume) {
        resume::section(&mut bench).await?;
    }
    if wants(Part::Concurrent) {
        concurrent::section(&mut bench).await?;
    }
    if wants(Part::Ledger) {
        ledger::section(&mut bench).await?;
    }
    if wants(Part::SlowLink) {
        slow_link::section(&mut bench).await?;
    }
    if wants(Part::LongPath) {
        long_path::section(&mut bench).await?;
    }
    if wants(Part::Sweep) {
        sweep::section(&mut bench).await?;
    }
    if wants(Part::Security) {
        security::section(&mut bench).await?;
    }
    if wants(Part::Replicas) {
        replicas::section(&mut bench).await?;
    }
    let elapsed = started.elapsed();
    println!("\ndone in {:.0} s", elapsed.as_secs_f64());

    if let Some(path) = &args.markdown {
        let command: Vec<String> = std::env::args().collect();
        let text = format!(
            "Machine: {machine}\n\nCommand: `{}` ({:.0} s)\n{}",
            command.join(" "),
            elapsed.as_secs_f64(),
            bench.report.markdown()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("tables written to {}", path.display());
    }
    Ok(())
}

/// Waits a moment so one run's leftovers (page-cache writeback, exiting processes) do
/// not land in the next.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Deletes a file, ignoring a missing one.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
