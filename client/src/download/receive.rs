//! Receiving a download's bytes, in order, into the `.part` file and the hash: from one
//! stream, or striped over several connections.
//!
//! A download starts as one `Download` call from where `.part` ends to the end of the
//! file, written as it comes. When the [`StripeGovernor`] asks for more connections, the
//! rest of the file is fetched as blocks (a ranged `Download` each, at most
//! [`BLOCKS_PER_LANE`] at once on each connection, so a lane never waits a round trip
//! between blocks): the first stream stops where the blocks begin (what the server had
//! sent past that point is dropped, a stream window at most, once per download). Bytes
//! that arrive ahead of the next one to write wait in memory, never more than
//! [`crate::ClientConfig::download_window_bytes`] past it, and are written in order, so
//! `.part` always holds exactly a verified prefix of the file and the MD5 sees every
//! byte once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use transfer_md5::Md5;
use transfer_proto::v1::{DownloadResponse, FileInfo, download_response};
use transfer_shared::hash_pipe::HashPipe;

use crate::connection::{DownloadStream, ServerConnection};
use crate::part_writer::PartWriter;
use crate::progress::{Command, Reporter};
use crate::retry::Interruption;
use crate::stripes::{StripeChange, StripeGovernor};

/// Bytes one block asks for.
const BLOCK: u64 = 32 << 20;
/// Blocks one connection fetches at once: its next block is asked for once the current
/// one has at most [`LANE_AHEAD`] bytes to come, so that it does not idle a round trip
/// between blocks, yet its blocks mostly come one after the other. (Two whole blocks at
/// once on each connection finished together, and the next byte to write waited for
/// both: at 250 ms, 16 MiB blocks two at a time reached 1.6-1.7× one connection,
/// 32 MiB ones asked for half-way 1.9×, 2.5× from the start.)
const BLOCKS_PER_LANE: usize = 2;
/// Bytes a connection may still have to receive when its next block is asked for.
const LANE_AHEAD: u64 = BLOCK / 2;
/// Streams that may fail in a row, with no byte arriving between, before the attempt
/// ends (and the next one, after a backoff, starts afresh).
const FAILURES_IN_A_ROW: u32 = 3;
/// Round trips the bytes in flight are averaged over: a window's bytes come in bursts,
/// and over one round trip the share below was reached in half a period's samples or
/// in all, by chance (a try came after 1 s or after 3 s).
const RECENT_ROUND_TRIPS: u32 = 2;
/// Share of a connection's window that must arrive per round trip for the download to
/// count as held back by its windows (at 250 ms one connection brought 0.96-1.1 of its
/// 32 MiB, and 0.9 was missed in a third of the samples now and then; at 50 ms, held
/// back by the CPUs, 0.84, which the governor's idle-CPU check tells apart).
const WINDOW_SHARE: f64 = 0.75;

/// A range of the file being fetched (or the first stream, to the end of the file).
struct Block {
    start: u64,
    end: u64,
    /// Bytes received from `start`, in order.
    received: u64,
    /// Bytes of it written to `.part` (and hashed).
    written: u64,
    /// Received and not yet written: it lies past the next byte to write.
    waiting: VecDeque<Bytes>,
    /// The call fetching what is not yet received; `None` while it needs one.
    stream: Option<DownloadStream>,
    lane: usize,
    /// The call's first message (the file) has arrived.
    answered: bool,
    /// When the call was made or last delivered.
    heard: Instant,
    /// When the call was made, until its first message: for the round trip.
    asked: Option<Instant>,
}

impl Block {
    fn missing(&self) -> u64 {
        self.end - self.start - self.received
    }
}

/// What receiving needs from the attempt.
pub(super) struct Receiving<'a> {
    pub server: &'a ServerConnection,
    pub label: &'a str,
    pub file_id: &'a str,
    pub file: &'a FileInfo,
    pub writer: &'a PartWriter,
    pub pipe: &'a HashPipe<Md5>,
}

/// The attempt's blocks and what they share.
pub(super) struct Receiver<'a> {
    at: Receiving<'a>,
    /// Blocks by start; together they cover `[written, fetched_to)`.
    blocks: BTreeMap<u64, Block>,
    /// Bytes `[.., written)` are written, in order.
    written: u64,
    /// Where the next block would start.
    fetched_to: u64,
    /// The first byte of this attempt.
    offset: u64,
    striping: bool,
    governor: StripeGovernor,
    /// The least time from asking to the first answer: the path's round trip.
    round_trip: Option<Duration>,
    /// Pieces received within the last [`RECENT_ROUND_TRIPS`] round trips, for the
    /// bytes in flight per round trip.
    recent: VecDeque<(Instant, u64)>,
    /// The bytes of `recent`, summed.
    recent_bytes: u64,
    /// When the first piece came.
    first_piece: Option<Instant>,
    /// What one connection can have in flight: its HTTP/2 stream window, or this host's
    /// TCP receive buffer if less.
    lane_window: u64,
    failures_in_a_row: u32,
    stall: Duration,
    most_lanes: usize,
    /// Bytes received in this attempt, in order or not: the rate the governor sees.
    received: u64,
    /// More connections did not pay: the rest of the file comes as one stream.
    one_stream_again: bool,
    /// Every connection had as many blocks asked for as it takes when blocks were last
    /// asked for (rather than the download window or the file's end stopping them).
    lanes_full: bool,
    /// Connections the governor last added that have not answered yet.
    unanswered_lanes: BTreeSet<usize>,
}

impl<'a> Receiver<'a> {
    /// Receives from `stream` (the first call, from `offset` to the end of the file,
    /// answered when it was made `asked` ago).
    pub fn new(at: Receiving<'a>, stream: DownloadStream, offset: u64, asked: Instant) -> Self {
        let config = at.server.config();
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        // Going from one stream to blocks drops what the first stream had on its way
        // past where the blocks begin: a change needs a round trip more to show.
        let governor = StripeGovernor::new(
            count(config.starting_connections),
            count(config.connections_per_file),
        )
        .settling_for(2);
        let lane_window = u64::from(config.http2_stream_window).min(tcp_receive_buffer());
        let now = Instant::now();
        let size = at.file.size;
        let first = Block {
            start: offset,
            end: size,
            received: 0,
            written: 0,
            waiting: VecDeque::new(),
            stream: Some(stream),
            lane: 0,
            answered: true,
            heard: now,
            asked: None,
        };
        let mut receiver = Self {
            blocks: BTreeMap::from([(offset, first)]),
            written: offset,
            fetched_to: size,
            offset,
            striping: false,
            round_trip: Some(now.saturating_duration_since(asked)),
            recent: VecDeque::new(),
            recent_bytes: 0,
            first_piece: None,
            lane_window,
            failures_in_a_row: 0,
            stall: config.stall_timeout,
            most_lanes: 1,
            received: 0,
            one_stream_again: false,
            lanes_full: false,
            unanswered_lanes: BTreeSet::new(),
            governor,
            at,
        };
        if receiver.governor.stripes() > 1 {
            receiver.start_striping();
        }
        receiver
    }

    /// Receives until the whole file is written; returns where the written bytes end
    /// (the file's size) or why it stopped.
    pub async fn run(&mut self, reporter: &mut Reporter) -> Result<u64, Interruption> {
        let size = self.at.file.size;
        while self.written < size {
            if self.striping {
                self.ask_for_blocks();
            }
            let deadline = self.next_deadline();
            tokio::select! {
                (start, message) = next_message(&mut self.blocks) => {
                    self.on_message(start, message, reporter).await?;
                }
                () = tokio::time::sleep_until(deadline) => self.end_stalled()?,
                command = reporter.command_changed() => match command {
                    Command::Cancel => return Err(Interruption::Cancelled),
                    Command::Pause => return Err(Interruption::Paused),
                    Command::Run => {}
                },
            }
        }
        Ok(self.written)
    }

    /// The most connections it received over at once.
    pub fn most_lanes(&self) -> u32 {
        u32::try_from(self.most_lanes).unwrap_or(u32::MAX)
    }

    /// Where the bytes written so far end.
    pub fn written(&self) -> u64 {
        self.written
    }

    async fn on_message(
        &mut self,
        start: u64,
        message: Option<Result<DownloadResponse, tonic::Status>>,
        reporter: &mut Reporter,
    ) -> Result<(), Interruption> {
        let Some(block) = self.blocks.get_mut(&start) else {
            return Ok(());
        };
        let now = Instant::now();
        block.heard = now;
        let response = match message {
            Some(Ok(response)) => response,
            Some(Err(status)) => {
                let why = Interruption::from_status(self.at.label, &status);
                return self.stream_failed(start, why);
            }
            None if block.missing() == 0 => {
                block.stream = None;
                return Ok(());
            }
            None => {
                let why = Interruption::Retry(format!(
                    "the download ended at byte {} of {}",
                    block.start + block.received,
                    self.at.file.size
                ));
                return self.stream_failed(start, why);
            }
        };
        match response.message {
            Some(download_response::Message::File(file)) if !block.answered => {
                if file.size != self.at.file.size || file.md5 != self.at.file.md5 {
                    return Err(self.protocol("a ranged download answered with another file"));
                }
                block.answered = true;
                let lane = block.lane;
                if let Some(asked) = block.asked.take() {
                    let round_trip = now.saturating_duration_since(asked);
                    self.round_trip =
                        Some(self.round_trip.map_or(round_trip, |r| r.min(round_trip)));
                }
                if self.unanswered_lanes.remove(&lane) {
                    self.governor.answered(now);
                }
                Ok(())
            }
            Some(download_response::Message::Piece(piece)) if block.answered => {
                let at = block.start + block.received;
                if piece.offset != at {
                    return Err(self.protocol(format!(
                        "a piece at offset {} where {at} was due",
                        piece.offset
                    )));
                }
                if crc32c::crc32c(&piece.data) != piece.crc32c {
                    return Err(Interruption::Retry(format!(
                        "the piece at offset {at} failed its CRC32C"
                    )));
                }
                // The first stream, once blocks took over the rest, is read only up to them.
                let wanted = (piece.data.len() as u64).min(block.missing());
                let data = piece.data.slice(..wanted as usize);
                block.received += wanted;
                if block.missing() == 0 {
                    block.stream = None;
                }
                block.waiting.push_back(data);
                self.failures_in_a_row = 0;
                self.write_in_order().await?;
                reporter.advance(self.written, self.written - self.offset);
                self.measure(now, wanted);
                Ok(())
            }
            _ => Err(self.protocol("an unexpected Download message")),
        }
    }

    /// Writes and hashes what has arrived from the next byte to write on.
    async fn write_in_order(&mut self) -> Result<(), Interruption> {
        while let Some(mut entry) = self.blocks.first_entry() {
            let block = entry.get_mut();
            if block.start + block.written != self.written {
                break;
            }
            let Some(data) = block.waiting.pop_front() else {
                break;
            };
            let len = data.len() as u64;
            if self.at.writer.write(data.clone()).await.is_err() {
                // The writer stopped on an error, which its `finish` reports.
                return Err(Interruption::Retry("writing the .part file stopped".into()));
            }
            self.at.pipe.feed(data).await;
            block.written += len;
            self.written += len;
            if block.written == block.end - block.start {
                entry.remove();
            }
        }
        Ok(())
    }

    /// Feeds the governor one piece's worth of measurement, and acts on its answer.
    fn measure(&mut self, now: Instant, bytes: u64) {
        let Some(round_trip) = self.round_trip else {
            return;
        };
        self.recent.push_back((now, bytes));
        self.recent_bytes += bytes;
        let span = round_trip * RECENT_ROUND_TRIPS;
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > span)
        {
            if let Some((_, gone)) = self.recent.pop_front() {
                self.recent_bytes = self.recent_bytes.saturating_sub(gone);
            }
        }
        let since_first = now.saturating_duration_since(*self.first_piece.get_or_insert(now));
        let round_trips = (since_first.as_secs_f64() / round_trip.as_secs_f64().max(1e-6))
            .clamp(1.0, f64::from(RECENT_ROUND_TRIPS));
        // One stream: a round trip's worth of bytes close to what its window allows
        // means the window, not the path's bandwidth, holds it back (a busy CPU the
        // governor tells apart). Blocks: every connection has all the blocks it takes
        // under way. (Whether the MD5's queue was full said nothing: a window's bytes
        // come in a burst that fills it at any rate.)
        let window_full = if self.striping {
            self.lanes_full
        } else {
            self.recent_bytes as f64 / round_trips >= WINDOW_SHARE * self.lane_window as f64
        };
        self.received += bytes;
        match self
            .governor
            .sample(now, Some(round_trip), self.received, window_full)
        {
            StripeChange::Keep => {}
            // More connections did not pay: back to one stream once the blocks come.
            StripeChange::Retire(_) => {
                self.one_stream_again = self.governor.stripes() == 1;
                self.unanswered_lanes.clear();
            }
            StripeChange::Add(added) => {
                let lanes = self.governor.stripes();
                self.unanswered_lanes = (lanes - added..lanes).collect();
                self.start_striping();
            }
        }
    }

    /// The rest of the file past a short way ahead of the first stream goes to blocks.
    /// (Again, after going back to one stream: that stream is cut the same way.)
    fn start_striping(&mut self) {
        self.striping = true;
        self.one_stream_again = false;
        let size = self.at.file.size;
        if let Some(last) = self.blocks.values_mut().next_back()
            && last.end == size
            && last.stream.is_some()
        {
            let cut = (last.start + last.received).saturating_add(BLOCK).min(size);
            last.end = cut;
            if last.missing() == 0 {
                last.stream = None;
            }
            self.fetched_to = cut;
        }
    }

    /// Asks for blocks while the window and the connections have room: first the
    /// unfinished ranges of streams that failed, then new blocks in order.
    fn ask_for_blocks(&mut self) {
        let lanes = self.governor.stripes();
        let window = self.at.server.config().download_window_bytes.max(BLOCK);
        loop {
            let Some(lane) = (0..lanes)
                .filter(|lane| {
                    self.streams_on(*lane) < BLOCKS_PER_LANE && self.to_come_on(*lane) <= LANE_AHEAD
                })
                .min_by_key(|lane| self.to_come_on(*lane))
            else {
                self.lanes_full = true;
                return;
            };
            self.lanes_full = false;
            if let Some(block) = self
                .blocks
                .values_mut()
                .find(|b| b.stream.is_none() && b.missing() > 0)
            {
                let from = block.start + block.received;
                block.lane = lane;
                block.answered = false;
                block.asked = Some(Instant::now());
                block.heard = Instant::now();
                block.stream = Some(self.at.server.download_range(
                    lane,
                    self.at.file_id,
                    from,
                    block.end - from,
                ));
                continue;
            }
            let size = self.at.file.size;
            let end = if self.one_stream_again {
                // One connection left (more did not pay): once the blocks asked for
                // have come, the rest comes in one stream again, in order.
                if self.blocks.values().any(|b| b.stream.is_some()) {
                    return;
                }
                size
            } else {
                self.fetched_to.saturating_add(BLOCK).min(size)
            };
            if self.fetched_to >= size
                || (!self.one_stream_again && end > self.written.saturating_add(window))
            {
                return;
            }
            self.most_lanes = self.most_lanes.max(lane + 1);
            let now = Instant::now();
            let stream = self.at.server.download_range(
                lane,
                self.at.file_id,
                self.fetched_to,
                end - self.fetched_to,
            );
            self.blocks.insert(
                self.fetched_to,
                Block {
                    start: self.fetched_to,
                    end,
                    received: 0,
                    written: 0,
                    waiting: VecDeque::new(),
                    stream: Some(stream),
                    lane,
                    answered: false,
                    heard: now,
                    asked: Some(now),
                },
            );
            self.fetched_to = end;
        }
    }

    /// Bytes the streams on connection `lane` still have to bring.
    fn to_come_on(&self, lane: usize) -> u64 {
        self.blocks
            .values()
            .filter(|b| b.lane == lane && b.stream.is_some())
            .map(Block::missing)
            .sum()
    }

    fn streams_on(&self, lane: usize) -> usize {
        self.blocks
            .values()
            .filter(|b| b.lane == lane && b.stream.is_some())
            .count()
    }

    /// A stream ended before its range did. On its own, that ends the attempt; while
    /// others run, its range is asked for again (on whichever connection has room),
    /// unless streams keep failing with nothing arriving between.
    fn stream_failed(&mut self, start: u64, why: Interruption) -> Result<(), Interruption> {
        if matches!(why, Interruption::Fatal(_) | Interruption::Cancelled) || !self.striping {
            return Err(why);
        }
        self.failures_in_a_row += 1;
        if self.failures_in_a_row >= FAILURES_IN_A_ROW {
            return Err(why);
        }
        if let Some(block) = self.blocks.get_mut(&start) {
            block.stream = None;
            if matches!(why, Interruption::Stalled(_)) {
                self.at.server.reconnect_lane(block.lane);
            }
        }
        self.governor.lost(Instant::now());
        self.unanswered_lanes.clear();
        Ok(())
    }

    /// When the next stream stalls: the earliest a stream last heard, plus the stall
    /// timeout.
    fn next_deadline(&self) -> Instant {
        self.blocks
            .values()
            .filter(|b| b.stream.is_some())
            .map(|b| b.heard)
            .min()
            .map_or_else(|| Instant::now() + self.stall, |heard| heard + self.stall)
    }

    fn end_stalled(&mut self) -> Result<(), Interruption> {
        let now = Instant::now();
        let stalled: Vec<u64> = self
            .blocks
            .values()
            .filter(|b| b.stream.is_some() && now >= b.heard + self.stall)
            .map(|b| b.start)
            .collect();
        for start in stalled {
            let why = Interruption::Stalled("no data: the stream is stalled".into());
            self.stream_failed(start, why)?;
        }
        Ok(())
    }

    fn protocol(&self, problem: impl Into<String>) -> Interruption {
        Interruption::Fatal(crate::error::TransferError::protocol(
            self.at.label,
            problem,
        ))
    }
}

/// The next message of any block's stream, with the block's start. Cancel-safe.
async fn next_message(
    blocks: &mut BTreeMap<u64, Block>,
) -> (u64, Option<Result<DownloadResponse, tonic::Status>>) {
    let mut next: FuturesUnordered<_> = blocks
        .values_mut()
        .filter_map(|block| {
            let start = block.start;
            block
                .stream
                .as_mut()
                .map(|stream| async move { (start, stream.next().await) })
        })
        .collect();
    match next.next().await {
        Some(message) => message,
        None => std::future::pending().await,
    }
}

/// The most this host lets one TCP connection receive ahead (Linux's
/// `net.ipv4.tcp_rmem` maximum); unbounded where it cannot be read.
fn tcp_receive_buffer() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(u64::MAX)
}
