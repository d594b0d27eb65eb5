//! The streams of one upload attempt: the missing chunks sent over one or more stripes
//! (`UploadChunks` streams into the same session, each on a connection of its own)
//! that share one window of chunks in flight; acks taken from all of them; the
//! whole-file MD5 declared at the end of a single pass.
//!
//! A stripe that breaks while others go on gives its unacknowledged chunks back to be
//! sent on the others (the server acks any it had stored as already stored); only
//! when no stripe is left does the attempt end, and the next one asks the server what
//! it has. How many stripes run is [`StripeGovernor`]'s call.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use transfer_proto::v1::{
    Chunk, ChunkAck, ChunkOutcome, UploadChunksRequest, UploadChunksResponse,
    upload_chunks_request, upload_chunks_response,
};
use transfer_shared::layout::ChunkLayout;

use crate::chunks::ToSend;
use crate::error::TransferError;
use crate::progress::{Command, Reporter};
use crate::retry::Interruption;
use crate::source::ChunkSource;
use crate::stripes::{StripeChange, StripeGovernor};

use super::stripe::Stripe;
use super::{Upload, UploadedFile, read_error};

/// How many chunks may be in flight: on one stripe (the session's window: the server
/// refuses more on one stream), and on all of them together (this client's window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Windows {
    pub per_stripe: usize,
    pub shared: usize,
}

/// The stripes of one attempt and what they share.
pub(super) struct ChunkStreams {
    upload_id: String,
    stripes: Vec<Stripe>,
    windows: Windows,
    governor: StripeGovernor,
    /// Chunks still to send.
    to_send: ToSend,
    /// How often each chunk was rejected.
    rejections: BTreeMap<u64, u32>,
    layout: ChunkLayout,
    /// Bytes acknowledged (or committed before this attempt).
    done_bytes: u64,
    /// Bytes acknowledged in this attempt, for the rate.
    phase_bytes: u64,
    /// Why the last stripe to end ended: the attempt's interruption if none is left.
    last_end: Option<Interruption>,
}

impl ChunkStreams {
    /// The attempt's streams into session `upload_id`, starting with one stripe, sending
    /// `to_send` of `layout`; `done_bytes` were committed before, and `CheckUpload` took
    /// `round_trip`.
    pub(super) fn open<S: ChunkSource>(
        upload: &mut Upload<'_, S>,
        upload_id: &str,
        windows: Windows,
        layout: ChunkLayout,
        to_send: ToSend,
        done_bytes: u64,
        round_trip: Duration,
    ) -> Self {
        let config = upload.server.config();
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        // More stripes than chunks the shared window holds would leave some idle.
        let most = count(config.connections_per_file).min(windows.shared);
        let mut governor = StripeGovernor::new(count(config.starting_connections), most);
        governor.path_round_trip(round_trip);
        let mut streams = Self {
            upload_id: upload_id.to_owned(),
            stripes: Vec::new(),
            windows,
            governor,
            to_send,
            rejections: BTreeMap::new(),
            layout,
            done_bytes,
            phase_bytes: 0,
            last_end: None,
        };
        for _ in 0..streams.governor.stripes() {
            streams.add_stripe(upload);
        }
        streams
    }

    pub(super) async fn run<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &mut Reporter,
    ) -> Result<UploadedFile, Interruption> {
        let stall = upload.server.config().stall_timeout;
        let mut pausing = false;
        loop {
            if !pausing {
                self.fill(upload).await?;
                // Everything is sent: a single pass knows the MD5 now; tell the server.
                if self.to_send.is_empty(&upload.acked) {
                    self.declare_digest(upload).await?;
                }
                self.close_finished(upload);
            }
            if self.stripes.is_empty() {
                return Err(self.last_end.take().unwrap_or_else(|| {
                    Interruption::Retry("every stream of the upload ended".into())
                }));
            }
            if pausing && self.in_flight() == 0 {
                return Err(Interruption::Paused);
            }
            let deadline = self.next_deadline(stall);
            tokio::select! {
                // Answers that are already here first: after a long wait of this
                // client's own (reading and hashing a tail), they are not stalls.
                biased;
                (position, response) = next_response(&mut self.stripes) => {
                    let now = Instant::now();
                    let stripe = &mut self.stripes[position];
                    stripe.heard = now;
                    if matches!(response, Some(Ok(_)))
                        && std::mem::take(&mut stripe.awaited_by_try)
                    {
                        self.governor.answered(now);
                    }
                    match response {
                        Some(Ok(UploadChunksResponse { message: Some(message) })) => {
                            if let Some(done) = self.receive(upload, reporter, position, message)? {
                                return Ok(done);
                            }
                        }
                        Some(Ok(UploadChunksResponse { message: None })) => {
                            return Err(upload.protocol("an empty UploadChunks response"));
                        }
                        Some(Err(status)) => {
                            let why = Interruption::from_status(&upload.label, &status);
                            self.stripe_ended(upload, position, why)?;
                        }
                        None => {
                            let why = Interruption::Retry(
                                "the server ended the stream before the upload completed".into(),
                            );
                            self.stripe_ended(upload, position, why)?;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    // Asked to pause, and nothing moves: pause.
                    if pausing {
                        return Err(Interruption::Paused);
                    }
                    self.end_stalled(upload, stall)?;
                }
                command = reporter.command_changed() => match command {
                    Command::Cancel => return Err(Interruption::Cancelled),
                    Command::Pause => pausing = true,
                    Command::Run => pausing = false,
                },
            }
        }
    }

    /// Chunks in flight on all stripes.
    fn in_flight(&self) -> usize {
        self.stripes.iter().map(|s| s.in_flight.len()).sum()
    }

    /// The most chunks the stripes that take chunks may have in flight together.
    fn capacity(&self) -> usize {
        let taking = self
            .stripes
            .iter()
            .filter(|s| Self::takes_chunks(s))
            .count();
        (taking * self.windows.per_stripe).min(self.windows.shared)
    }

    /// Sends chunks while the window has room, each on the stripe with the fewest in
    /// flight.
    async fn fill<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
    ) -> Result<(), Interruption> {
        while self.in_flight() < self.windows.shared {
            let per_stripe = self.windows.per_stripe;
            let Some(position) = (0..self.stripes.len())
                .filter(|&p| self.stripes[p].has_room(per_stripe))
                .min_by_key(|&p| self.stripes[p].in_flight.len())
            else {
                break;
            };
            let Some(index) = self.to_send.next(&upload.acked) else {
                break;
            };
            let message = chunk_message(upload, &self.layout, index).await?;
            let stripe = &mut self.stripes[position];
            if stripe.send(message).await.is_err() {
                // The call has ended; its responses say why. The chunk goes on another.
                stripe.broken = true;
                self.to_send.again(index);
                self.keep_one_taking();
                continue;
            }
            if stripe.in_flight.is_empty() {
                // Its wait for an answer starts now, not when it was last answered.
                stripe.heard = Instant::now();
            }
            stripe.in_flight.insert(index, Instant::now());
            upload.chunks_sent += 1;
        }
        Ok(())
    }

    /// Finishes the single pass's MD5 (reading any tail the server already had) and
    /// tells every stripe that has not been told.
    async fn declare_digest<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
    ) -> Result<(), Interruption> {
        if self.stripes.iter().all(|s| s.digest_sent || s.half_closed) {
            return Ok(());
        }
        let md5 = match (upload.md5, upload.streaming.as_mut()) {
            (Some(md5), _) => md5,
            (None, Some(streaming)) => streaming
                .finish(upload.source)
                .await
                .map_err(|e| Interruption::Fatal(read_error(&upload.label, e)))?,
            (None, None) => return Err(upload.protocol("no way to know the file's MD5")),
        };
        upload.md5 = Some(md5);
        let now = Instant::now();
        for stripe in &mut self.stripes {
            if stripe.send_digest(md5).await.is_err() {
                stripe.broken = true;
            }
            // Finishing the hash may have read a long tail: the wait was this client's.
            stripe.heard = now;
        }
        Ok(())
    }

    /// Half-closes the stripes that have nothing more to send: retiring ones once their
    /// chunks are acknowledged, and every one once the whole file is sent and
    /// acknowledged and the server has the MD5 (it then answers `completed`). A stripe
    /// is never closed owing the MD5 to a session that may be waiting for it.
    fn close_finished<S: ChunkSource>(&mut self, upload: &Upload<'_, S>) {
        let all_sent = self.to_send.is_empty(&upload.acked);
        for stripe in &mut self.stripes {
            if stripe.half_closed || stripe.broken || !stripe.in_flight.is_empty() {
                continue;
            }
            let done = if stripe.digest_sent {
                stripe.retiring || all_sent
            } else {
                stripe.retiring && !all_sent
            };
            if done {
                stripe.half_close();
            }
        }
    }

    /// When the next stripe stalls: one that has chunks in flight, or waits for
    /// `completed`, and has heard nothing for `stall`.
    fn next_deadline(&self, stall: Duration) -> Instant {
        self.stripes
            .iter()
            .filter(|s| s.awaits_answer())
            .map(|s| s.heard)
            .min()
            .map_or_else(|| Instant::now() + stall, |heard| heard + stall)
    }

    /// Ends the stripes that heard nothing for `stall` (their connections may hang:
    /// the next stripe on that lane gets a new one).
    fn end_stalled<S: ChunkSource>(
        &mut self,
        upload: &Upload<'_, S>,
        stall: Duration,
    ) -> Result<(), Interruption> {
        let now = Instant::now();
        while let Some(position) = self
            .stripes
            .iter()
            .position(|s| s.awaits_answer() && now >= s.heard + stall)
        {
            let why =
                Interruption::Stalled(format!("no answer for {stall:?}: the stream is stalled"));
            self.stripe_ended(upload, position, why)?;
        }
        Ok(())
    }

    /// A stripe ended (`why`) without the upload completing. Its unacknowledged chunks
    /// go to the others; with none left, or for a reason no other stripe can help
    /// with, the attempt ends.
    fn stripe_ended<S: ChunkSource>(
        &mut self,
        upload: &Upload<'_, S>,
        position: usize,
        why: Interruption,
    ) -> Result<(), Interruption> {
        if matches!(why, Interruption::Fatal(_) | Interruption::Cancelled) {
            return Err(why);
        }
        let stripe = self.stripes.remove(position);
        for index in stripe.in_flight.into_keys() {
            self.to_send.again(index);
        }
        let failed = !stripe.half_closed || stripe.broken;
        if failed && !stripe.retiring {
            self.governor.lost(Instant::now());
        }
        if matches!(why, Interruption::Stalled(_)) {
            upload.server.reconnect_lane(stripe.lane);
        }
        if self.stripes.is_empty() {
            return Err(why);
        }
        self.last_end = Some(why);
        self.keep_one_taking();
        Ok(())
    }

    /// Whether a stripe takes new chunks.
    fn takes_chunks(stripe: &Stripe) -> bool {
        !stripe.retiring && !stripe.half_closed && !stripe.broken
    }

    /// With chunks left, some stripe must take them: if the last one that did broke
    /// while others were retiring, the newest of those takes chunks again.
    fn keep_one_taking(&mut self) {
        if self.stripes.iter().any(Self::takes_chunks) {
            return;
        }
        if let Some(stripe) = self
            .stripes
            .iter_mut()
            .rev()
            .find(|s| s.retiring && !s.half_closed && !s.broken)
        {
            stripe.retiring = false;
        }
    }

    /// Opens one more stripe, on the lowest lane no stripe uses.
    fn add_stripe<S: ChunkSource>(&mut self, upload: &mut Upload<'_, S>) {
        let lane = (0..)
            .find(|lane| self.stripes.iter().all(|s| s.lane != *lane))
            .unwrap_or(0);
        let stripe = Stripe::open(
            upload.server,
            lane,
            &self.upload_id,
            self.windows.per_stripe,
            upload.md5,
        );
        self.stripes.push(stripe);
        let open = u32::try_from(self.stripes.len()).unwrap_or(u32::MAX);
        upload.connections = upload.connections.max(open);
    }

    fn apply<S: ChunkSource>(&mut self, upload: &mut Upload<'_, S>, change: StripeChange) {
        match change {
            StripeChange::Keep => {}
            StripeChange::Add(count) => {
                for stripe in &mut self.stripes {
                    stripe.awaited_by_try = false;
                }
                for _ in 0..count {
                    self.add_stripe(upload);
                    if let Some(added) = self.stripes.last_mut() {
                        added.awaited_by_try = true;
                    }
                }
            }
            StripeChange::Retire(count) => {
                // Never the last that takes chunks.
                let taking = self
                    .stripes
                    .iter()
                    .filter(|s| Self::takes_chunks(s))
                    .count();
                for stripe in self
                    .stripes
                    .iter_mut()
                    .rev()
                    .filter(|s| Self::takes_chunks(s))
                    .take(count.min(taking.saturating_sub(1)))
                {
                    stripe.retiring = true;
                }
            }
        }
    }

    /// Handles one response on the stripe at `position`; `Some` when the upload is
    /// complete.
    fn receive<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &Reporter,
        position: usize,
        message: upload_chunks_response::Message,
    ) -> Result<Option<UploadedFile>, Interruption> {
        match message {
            upload_chunks_response::Message::Completed(done) => {
                let file = done
                    .file
                    .ok_or_else(|| upload.protocol("`completed` without the file"))?;
                upload.finished(file, false).map(Some)
            }
            upload_chunks_response::Message::Ack(ack) => {
                self.acknowledge(upload, reporter, position, ack)?;
                Ok(None)
            }
        }
    }

    fn acknowledge<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &Reporter,
        position: usize,
        ack: ChunkAck,
    ) -> Result<(), Interruption> {
        // Whether the sender was waiting on acks with more to send.
        let window_full =
            self.in_flight() >= self.capacity() && !self.to_send.is_empty(&upload.acked);
        let Some(sent) = self.stripes[position].in_flight.remove(&ack.index) else {
            return Err(upload.protocol(format!(
                "an ack for chunk {} which was not in flight",
                ack.index
            )));
        };
        match ack.outcome() {
            outcome @ (ChunkOutcome::Stored | ChunkOutcome::AlreadyStored) => {
                if outcome == ChunkOutcome::AlreadyStored {
                    upload.chunks_already_stored += 1;
                }
                if upload.acked.insert(ack.index) {
                    let len = self.layout.chunk_len(ack.index).map_or(0, u64::from);
                    self.done_bytes += len;
                    self.phase_bytes += len;
                    reporter.advance(self.done_bytes, self.phase_bytes);
                }
                let now = Instant::now();
                let change = self.governor.sample(
                    now,
                    Some(now.saturating_duration_since(sent)),
                    self.phase_bytes,
                    window_full,
                );
                self.apply(upload, change);
                Ok(())
            }
            ChunkOutcome::BadChecksum => {
                let rejections = self.rejections.entry(ack.index).or_insert(0);
                *rejections += 1;
                if *rejections > upload.server.config().max_chunk_resends {
                    return Err(Interruption::Fatal(TransferError::ChunkRejected {
                        file: upload.label.clone(),
                        index: ack.index,
                        attempts: *rejections,
                        detail: ack.detail,
                    }));
                }
                // Damaged on the way: send it again, first.
                self.to_send.again(ack.index);
                Ok(())
            }
            outcome => Err(Interruption::Fatal(TransferError::ChunkRejected {
                file: upload.label.clone(),
                index: ack.index,
                attempts: 1,
                detail: format!("{outcome:?}: {}", ack.detail),
            })),
        }
    }
}

/// The next response of any stripe, with the stripe's position. Cancel-safe (each
/// stripe's `next` is).
async fn next_response(
    stripes: &mut [Stripe],
) -> (usize, Option<Result<UploadChunksResponse, tonic::Status>>) {
    let mut next: FuturesUnordered<_> = stripes
        .iter_mut()
        .enumerate()
        .map(|(position, stripe)| async move { (position, stripe.next().await) })
        .collect();
    match next.next().await {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

/// Reads chunk `index` (feeding a single pass's MD5 as it goes) into its message.
async fn chunk_message<S: ChunkSource>(
    upload: &mut Upload<'_, S>,
    layout: &ChunkLayout,
    index: u64,
) -> Result<UploadChunksRequest, Interruption> {
    let offset = layout.offset(index);
    let read_failed = |e| Interruption::Fatal(read_error(&upload.label, e));
    if let Some(streaming) = upload.streaming.as_mut()
        && streaming.digest().is_none()
    {
        // Bytes before this chunk that are not sent (the server has them) are hashed
        // first, so the hash sees the file in order.
        streaming
            .catch_up(upload.source, offset)
            .await
            .map_err(read_failed)?;
    }
    let data = upload
        .source
        .read_at(
            offset,
            layout.chunk_len(index).map_or(0, |len| len as usize),
        )
        .await
        .map_err(read_failed)?;
    if let Some(streaming) = upload.streaming.as_mut()
        && streaming.digest().is_none()
    {
        streaming.offer(offset, &data).await;
    }
    Ok(UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Chunk(Chunk {
            index,
            crc32c: crc32c::crc32c(&data),
            data,
        })),
    })
}
