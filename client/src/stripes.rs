//! How many connections one file's transfer uses at once ("stripes").
//!
//! One TCP connection moves at most its receive window per round trip: on a long path
//! (250 ms, a 32 MiB window: 128 MiB/s) that, not the link, bounds a transfer, and
//! several connections each bring their own window. On loopback or a short path a
//! second connection buys nothing, so a transfer starts with one and adds connections
//! only while they pay:
//!
//! - it measures the rate over periods of a few round trips (the first: one);
//! - it tries more connections, at once as many as allowed, when the window was full
//!   through the period, so the sender waited on acknowledgements, and the path's own
//!   round trip is a real share of the wait (`base / mean latency`): when bytes wait
//!   mostly in a queue in front of a busy CPU or a slow link, more windows only
//!   lengthen the queue, and it does not try at all. Nor while less than a third of
//!   this host's CPU time went idle: more connections cost CPU (at 50 ms, with client,
//!   server and link on two busy cores, four connections downloaded at 450 MiB/s and
//!   one at 547, and a try that was undone cost 7-9%). Doubling step by step cost a
//!   second per step at 250 ms, a quarter of a 1 GiB transfer, at the slower rate.
//! - a try is measured from a round trip (downloads: two) after every connection it
//!   added has answered, or after at most [`MOST_ROUND_TRIPS_TO_ANSWER`] (opening one
//!   takes round trips of its own: TCP, TLS), against the rate of the last few periods
//!   before it (the first try: the first period's alone); it is kept when the rate grew
//!   by a fifth, and undone otherwise, all it added at once; after an undone try it
//!   waits a while before trying again (conditions change over a long transfer).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::host_cpu::{IdleCpu, ProcStat};

/// The shortest period the rate is measured over.
const MIN_PERIOD: Duration = Duration::from_millis(250);
/// A period is this many base round trips long (at least [`MIN_PERIOD`]): over one, at
/// 250 ms, acknowledgements came in bursts that made the rate swing by half. The
/// transfer's first period is one round trip all the same: the sooner a long path is
/// found, the more of the transfer gains, and a try at the most connections allowed
/// gains far more than that swing where it pays at all.
const PERIOD_ROUND_TRIPS: u32 = 2;
/// The rate must grow by this factor for added connections to stay.
const GROWTH: f64 = 1.2;
/// Share of a period's samples in which the window must have been full.
const BOUND_SHARE: f64 = 0.8;
/// Least share of the mean latency the base round trip must be to try more connections
/// (at 50 ms behind a busy CPU it was about a third; at 250 ms behind a TCP window of
/// half the client's, a half).
const ROUND_TRIP_SHARE: f64 = 0.4;
/// Periods to wait after an undone try before trying again.
const REPROBE_AFTER: u32 = 20;
/// Most round trips a try waits for the connections it added to answer (TCP, TLS and
/// HTTP/2 handshakes, then a first acknowledgement) before it is measured anyway: one
/// that is given nothing to carry near the end of a transfer never answers.
const MOST_ROUND_TRIPS_TO_ANSWER: u32 = 6;
/// Least share of this host's CPU time that must have gone idle over a period to try
/// more connections (at 50 ms, where four connections were slower than one, 0.04-0.18
/// was idle; at 250 ms, where they paid, 0.65-0.75).
const MIN_IDLE_SHARE: f64 = 0.3;
/// Periods whose rate a try is judged against: at 250 ms a single period's rate swung
/// by a quarter (acknowledgements come in bursts of a window).
const RATE_PERIODS: usize = 4;

/// What the transfer should do about its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StripeChange {
    /// Keep the connections it has.
    Keep,
    /// Open this many more.
    Add(usize),
    /// Retire this many of the newest (they finish what they carry, and take no more).
    Retire(usize),
}

/// Decides, from what a transfer measures, how many connections it uses.
#[derive(Debug)]
pub(crate) struct StripeGovernor {
    max: usize,
    current: usize,
    /// Least latency seen from sending to acknowledgement: the path's round trip plus
    /// the least a chunk takes, with no queue.
    base: Option<Duration>,
    /// The period being measured; none until the first sample.
    period: Option<Period>,
    /// Samples before this instant are not measured (a change is settling).
    settling_until: Option<Instant>,
    /// A try under way: the connections before it and the rate they had.
    trying: Option<Try>,
    /// Periods left before trying again after an undone try.
    cooling: u32,
    /// Bytes and time of the last few periods measured with the current connections.
    recent: VecDeque<(u64, Duration)>,
    /// Connections added by the try under way that have not answered yet.
    unanswered: usize,
    /// Round trips a change is given, once its connections answered, before the rate is
    /// measured again.
    settle_round_trips: u32,
    /// The first acknowledgement has come. Measuring starts a round trip later: until
    /// then come the acknowledgements of a first window sent all at once, in a burst.
    warm: bool,
    /// A period has been measured (the first is shorter).
    measured: bool,
    /// How much of this host's CPU time goes idle.
    cpu: Box<dyn IdleCpu>,
}

#[derive(Debug)]
struct Period {
    start: Instant,
    bytes_at_start: u64,
    latency_sum: Duration,
    latencies: u32,
    samples: u32,
    bound: u32,
}

#[derive(Debug, Clone, Copy)]
struct Try {
    before: usize,
    rate_before: f64,
}

impl StripeGovernor {
    /// A transfer that starts with `starting` connections and may use up to `max` (at
    /// least one either way).
    pub fn new(starting: usize, max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            current: starting.clamp(1, max),
            base: None,
            period: None,
            settling_until: None,
            trying: None,
            cooling: 0,
            recent: VecDeque::new(),
            unanswered: 0,
            warm: false,
            measured: false,
            settle_round_trips: 1,
            cpu: Box::new(ProcStat::default()),
        }
    }

    /// Reads the host's idle CPU time from `cpu` (rather than `/proc/stat`).
    #[cfg(test)]
    pub fn with_idle_cpu(mut self, cpu: Box<dyn IdleCpu>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Gives each change `round_trips` base round trips, from when the connections it
    /// added have answered, before the rate is measured again (1 by default: a new
    /// connection's window fills over the round trip after its first answer).
    pub fn settling_for(mut self, round_trips: u32) -> Self {
        self.settle_round_trips = round_trips.clamp(1, 16);
        self
    }

    /// A round trip on the path with no queue in it (a small call's), known before the
    /// first acknowledgement: the least latency an acknowledgement could have. A first
    /// chunk's own acknowledgement also waits for the server to open the upload and
    /// store the chunk, which on loopback looks like a long path.
    pub fn path_round_trip(&mut self, round_trip: Duration) {
        self.base = Some(self.base.map_or(round_trip, |base| base.min(round_trip)));
    }

    /// Connections the transfer should have now.
    pub fn stripes(&self) -> usize {
        self.current
    }

    /// A connection was lost (it broke): the count goes down with it, and the try
    /// under way, if any, is over.
    pub fn lost(&mut self, now: Instant) {
        self.current = self.current.saturating_sub(1).max(1);
        self.trying = None;
        self.unanswered = 0;
        // What the others carry again is no rate to measure.
        self.settle(now, self.settle_round_trips);
    }

    /// A connection the try under way added answered for the first time (an upload
    /// stream's first acknowledgement, a download block's first message): once all it
    /// added have, the try is measured a little later. Answers when no try waits for
    /// any change nothing.
    pub fn answered(&mut self, now: Instant) {
        if self.unanswered > 0 {
            self.unanswered -= 1;
            if self.unanswered == 0 {
                self.settle(now, self.settle_round_trips);
            }
        }
    }

    /// One acknowledgement: `latency` from sending to it (if known), `done` bytes in all
    /// so far, and whether the window was full (the sender waiting on acknowledgements
    /// with more to send).
    pub fn sample(
        &mut self,
        now: Instant,
        latency: Option<Duration>,
        done: u64,
        window_full: bool,
    ) -> StripeChange {
        if let Some(latency) = latency {
            self.base = Some(self.base.map_or(latency, |base| base.min(latency)));
        }
        if !std::mem::replace(&mut self.warm, true) {
            self.settle(now, 1);
        }
        if self.settling_until.is_some_and(|until| now < until) {
            return StripeChange::Keep;
        }
        self.settling_until = None;
        let period_len = self.period_len();
        if self.period.is_none() {
            // The idle time is measured over the period.
            self.cpu.idle_share();
        }
        let period = self.period.get_or_insert(Period {
            start: now,
            bytes_at_start: done,
            latency_sum: Duration::ZERO,
            latencies: 0,
            samples: 0,
            bound: 0,
        });
        period.samples += 1;
        period.bound += u32::from(window_full);
        if let Some(latency) = latency {
            period.latency_sum += latency;
            period.latencies += 1;
        }
        let elapsed = now.saturating_duration_since(period.start);
        if elapsed < period_len {
            return StripeChange::Keep;
        }
        self.measured = true;
        let bytes = done.saturating_sub(period.bytes_at_start);
        let rate = bytes as f64 / elapsed.as_secs_f64();
        if self.recent.len() == RATE_PERIODS {
            self.recent.pop_front();
        }
        self.recent.push_back((bytes, elapsed));
        let bound_share = f64::from(period.bound) / f64::from(period.samples.max(1));
        let mean = (period.latencies > 0).then(|| period.latency_sum / period.latencies);
        self.period = None;
        let idle = self.cpu.idle_share();
        let change = self.decide(now, rate, bound_share, mean, idle);
        tracing::debug!(
            rate_mib_s = rate / f64::from(1 << 20),
            bound_share,
            base = ?self.base,
            mean = ?mean,
            idle_cpu = ?idle,
            ?change,
            connections = self.current,
            "striping"
        );
        change
    }

    fn period_len(&self) -> Duration {
        let round_trips = if self.measured { PERIOD_ROUND_TRIPS } else { 1 };
        self.base
            .map_or(MIN_PERIOD, |base| base * round_trips)
            .max(MIN_PERIOD)
    }

    fn decide(
        &mut self,
        now: Instant,
        rate: f64,
        bound_share: f64,
        mean: Option<Duration>,
        idle_cpu: Option<f64>,
    ) -> StripeChange {
        let tried = self.trying.take();
        if tried.is_some() {
            // Judged now: connections that never answered no longer matter.
            self.unanswered = 0;
        }
        if let Some(tried) = tried
            && rate < tried.rate_before * GROWTH
        {
            let retire = self.current - tried.before;
            self.current = tried.before;
            self.cooling = REPROBE_AFTER;
            self.settle(now, self.settle_round_trips);
            return StripeChange::Retire(retire);
        }
        if self.cooling > 0 {
            self.cooling -= 1;
            return StripeChange::Keep;
        }
        let round_trip_share = match (self.base, mean) {
            (Some(base), Some(mean)) if !mean.is_zero() => base.as_secs_f64() / mean.as_secs_f64(),
            _ => 0.0,
        };
        if self.current >= self.max
            || bound_share < BOUND_SHARE
            || round_trip_share < ROUND_TRIP_SHARE
            || idle_cpu.is_some_and(|idle| idle < MIN_IDLE_SHARE)
        {
            return StripeChange::Keep;
        }
        let (bytes, time) = self
            .recent
            .iter()
            .fold((0, Duration::ZERO), |(bytes, time), (b, t)| {
                (bytes + b, time + *t)
            });
        let add = self.max - self.current;
        self.trying = Some(Try {
            before: self.current,
            rate_before: bytes as f64 / time.as_secs_f64().max(f64::MIN_POSITIVE),
        });
        self.current += add;
        self.unanswered = add;
        self.settle(now, MOST_ROUND_TRIPS_TO_ANSWER + self.settle_round_trips);
        StripeChange::Add(add)
    }

    /// Samples are not measured for `round_trips` base round trips from `now`, and the
    /// rate is measured afresh from then.
    fn settle(&mut self, now: Instant, round_trips: u32) {
        self.settling_until = Some(now + self.base.unwrap_or(MIN_PERIOD) * round_trips);
        self.period = None;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's CPUs, as a test wants them: this share of their time idle.
    #[derive(Debug)]
    struct Idle(f64);

    impl IdleCpu for Idle {
        fn idle_share(&mut self) -> Option<f64> {
            Some(self.0)
        }
    }

    /// A governor on a host with CPU to spare (half of it idle).
    fn spare_cpu(starting: usize, max: usize) -> StripeGovernor {
        StripeGovernor::new(starting, max).with_idle_cpu(Box::new(Idle(0.5)))
    }

    /// Acknowledgements fed to a governor as time goes by.
    struct Feed {
        now: Instant,
        done: u64,
        /// When connections a try added answer first (one long round trip after it).
        answers: Vec<Instant>,
        /// New connections never answer.
        silent: bool,
    }

    impl Feed {
        fn new() -> Self {
            Self {
                now: Instant::now(),
                done: 0,
                answers: Vec::new(),
                silent: false,
            }
        }

        /// Feeds an acknowledgement every 10 ms for `for_ms`, at the rate `rate_of` gives
        /// for the connections the governor has, with `latency` and the window `full`;
        /// returns the changes it asked for.
        fn run(
            &mut self,
            governor: &mut StripeGovernor,
            for_ms: u64,
            latency: Duration,
            full: bool,
            rate_of: impl Fn(usize) -> u64,
        ) -> Vec<StripeChange> {
            let mut changes = Vec::new();
            for _ in 0..for_ms / 10 {
                self.now += Duration::from_millis(10);
                let now = self.now;
                for _ in self.answers.extract_if(.., |at| *at <= now) {
                    governor.answered(now);
                }
                self.done += rate_of(governor.stripes()) / 100;
                match governor.sample(self.now, Some(latency), self.done, full) {
                    StripeChange::Keep => {}
                    change => {
                        if let (StripeChange::Add(n), false) = (change, self.silent) {
                            self.answers.extend(std::iter::repeat_n(now + LONG_PATH, n));
                        }
                        changes.push(change);
                    }
                }
            }
            changes
        }
    }

    const MIB: u64 = 1 << 20;
    /// Acknowledgements on a 250 ms path: its round trip and a chunk's own time.
    const LONG_PATH: Duration = Duration::from_millis(280);

    /// Each connection adds its own 32 MiB TCP window per 250 ms round trip.
    fn per_connection(connections: usize) -> u64 {
        connections as u64 * 128 * MIB
    }

    #[test]
    fn a_long_path_where_each_connection_adds_its_window_goes_to_the_most_allowed_at_once() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // Each connection carries 128 MiB/s; acks come a round trip (250 ms) later.
        let changes = feed.run(&mut governor, 5_000, LONG_PATH, true, per_connection);
        assert_eq!(changes, vec![StripeChange::Add(3)]);
        assert_eq!(governor.stripes(), 4);
    }

    #[test]
    fn the_try_comes_two_round_trips_after_the_first_acknowledgement() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // One round trip not measured (the first window's burst), one measured.
        let early = feed.run(&mut governor, 600, LONG_PATH, true, per_connection);
        assert_eq!(early, vec![StripeChange::Add(3)]);
    }

    #[test]
    fn more_connections_that_do_not_raise_the_rate_are_retired() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // A long path, but the rate is capped elsewhere (a CPU, the link).
        let changes = feed.run(&mut governor, 3_000, LONG_PATH, true, |_| 300 * MIB);
        assert_eq!(changes, vec![StripeChange::Add(3), StripeChange::Retire(3)]);
        assert_eq!(governor.stripes(), 1);
    }

    #[test]
    fn a_try_is_judged_only_once_every_connection_it_added_has_answered() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        feed.silent = true;
        let flat = |_: usize| 300 * MIB;
        let tried = feed.run(&mut governor, 600, LONG_PATH, true, flat);
        assert_eq!(tried, vec![StripeChange::Add(3)]);
        // Two of the three answer at once; the third takes a second more (a slow TLS
        // handshake): the rate has not grown, and that is no reason to undo the try.
        governor.answered(feed.now);
        governor.answered(feed.now);
        let waiting = feed.run(&mut governor, 1_000, LONG_PATH, true, flat);
        assert!(waiting.is_empty(), "{waiting:?}");
        governor.answered(feed.now);
        // A round trip to settle, a period of two: judged within 900 ms of the answer
        // (the limit on waiting for answers would be 2 s after the try).
        let judged = feed.run(&mut governor, 900, LONG_PATH, true, flat);
        assert_eq!(judged, vec![StripeChange::Retire(3)]);
    }

    #[test]
    fn a_try_whose_connections_never_answer_is_judged_after_a_few_round_trips() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        feed.silent = true;
        let changes = feed.run(&mut governor, 4_000, LONG_PATH, true, |_| 300 * MIB);
        assert_eq!(changes, vec![StripeChange::Add(3), StripeChange::Retire(3)]);
    }

    #[test]
    fn a_try_that_raised_the_rate_keeps_every_connection_it_added() {
        let mut governor = spare_cpu(1, 8);
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 5_000, LONG_PATH, true, |n| {
            n.min(2) as u64 * 128 * MIB
        });
        assert_eq!(changes, vec![StripeChange::Add(7)]);
        assert_eq!(governor.stripes(), 8);
    }

    #[test]
    fn a_short_path_whose_latency_is_all_queue_never_tries_a_second_connection() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // The first chunk is acked in 5 ms; then every ack waits 160 ms behind a full
        // window at a busy server.
        governor.sample(feed.now, Some(Duration::from_millis(5)), 0, false);
        let changes = feed.run(
            &mut governor,
            5_000,
            Duration::from_millis(160),
            true,
            |n| n as u64 * 400 * MIB,
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(governor.stripes(), 1);
    }

    #[test]
    fn on_loopback_a_slow_first_acknowledgement_is_not_taken_for_a_long_path() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // CheckUpload came back in 2 ms; the first ack took 88 ms (the upload opened,
        // the chunk stored), the rest wait about 130 ms behind a full window.
        governor.path_round_trip(Duration::from_millis(2));
        governor.sample(feed.now, Some(Duration::from_millis(88)), 0, true);
        let changes = feed.run(
            &mut governor,
            5_000,
            Duration::from_millis(130),
            true,
            |n| n as u64 * 450 * MIB,
        );
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn the_first_period_is_not_judged_by_the_burst_of_a_first_window() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        // The first window's acks come all at once (400 MiB/s for a round trip), then
        // one connection's 128 MiB/s: a try at four, at 256 MiB/s, is kept.
        let burst = feed.run(&mut governor, 270, LONG_PATH, true, |_| 400 * MIB);
        assert!(burst.is_empty(), "{burst:?}");
        let changes = feed.run(&mut governor, 3_000, LONG_PATH, true, |n| {
            n.min(2) as u64 * 128 * MIB
        });
        assert_eq!(changes, vec![StripeChange::Add(3)]);
        assert_eq!(governor.stripes(), 4);
    }

    #[test]
    fn a_host_with_no_cpu_to_spare_does_not_try_more_connections() {
        let mut governor = StripeGovernor::new(1, 4).with_idle_cpu(Box::new(Idle(0.05)));
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 5_000, LONG_PATH, true, per_connection);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_sender_that_is_not_waiting_on_its_window_keeps_one_connection() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 5_000, LONG_PATH, false, per_connection);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn one_connection_allowed_is_one_connection() {
        let mut governor = spare_cpu(1, 1);
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 5_000, LONG_PATH, true, per_connection);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn after_an_undone_try_it_tries_again_only_much_later() {
        let mut governor = spare_cpu(1, 2);
        let mut feed = Feed::new();
        let flat = |_: usize| 300 * MIB;
        let first = feed.run(&mut governor, 2_000, LONG_PATH, true, flat);
        assert_eq!(first, vec![StripeChange::Add(1), StripeChange::Retire(1)]);
        // Twenty periods of 560 ms: nothing for about 11 s, then a new try.
        let quiet = feed.run(&mut governor, 10_000, LONG_PATH, true, flat);
        assert!(quiet.is_empty(), "{quiet:?}");
        let later = feed.run(&mut governor, 4_000, LONG_PATH, true, flat);
        assert_eq!(later.first(), Some(&StripeChange::Add(1)));
    }

    #[test]
    fn a_transfer_told_to_start_with_several_keeps_them_unless_they_break() {
        let mut governor = spare_cpu(3, 3);
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 3_000, LONG_PATH, true, |_| 300 * MIB);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(governor.stripes(), 3);
        governor.lost(feed.now);
        assert_eq!(governor.stripes(), 2);
    }

    #[test]
    fn a_lost_connection_counts_down_and_ends_the_try() {
        let mut governor = spare_cpu(1, 4);
        let mut feed = Feed::new();
        let changes = feed.run(&mut governor, 1_000, LONG_PATH, true, per_connection);
        assert_eq!(changes, vec![StripeChange::Add(3)]);
        governor.lost(feed.now);
        assert_eq!(governor.stripes(), 3);
        // The try is over: a flat rate now does not undo it (back to one); a new try
        // for the fourth is, back to three.
        let after = feed.run(&mut governor, 5_000, LONG_PATH, true, |_| 300 * MIB);
        assert_eq!(after, vec![StripeChange::Add(1), StripeChange::Retire(1)]);
        assert_eq!(governor.stripes(), 3);
    }
}
