//! An HTTP/2 body read as gRPC messages: what both ends of a bulk call do with the
//! body they receive (the server with an upload's requests, the client with a
//! download's or an upload's responses).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;

use crate::aligned::BufferPool;
use crate::framer::{FramingError, MessageFramer};
use crate::memory::{MemoryRefused, MessageMemory, Reserving};

/// The next thing a body of gRPC messages holds.
#[derive(Debug)]
pub enum BodyEvent<E> {
    /// One whole message, not yet decoded.
    Message(Bytes),
    /// The body's trailers; it ends after them.
    Trailers(HeaderMap),
    /// The framing broke here; the messages before it came first. Nothing follows.
    Broken(FramingError),
    /// The next message was refused the memory it needs. Nothing follows.
    Refused(MemoryRefused),
    /// The body itself failed (a reset stream, a lost connection). Nothing follows.
    Failed(E),
    /// The body ended, with `missing` bytes of a begun message never sent.
    End { missing: usize },
}

/// Messages out of a body, gathered by a [`MessageFramer`].
pub struct FramedBody<B> {
    body: B,
    framer: MessageFramer,
    /// Whole messages not yet handed on.
    done: VecDeque<Bytes>,
    /// Where the framing broke, told once the messages before it are out.
    broken: Option<FramingError>,
    /// Grants large messages their memory, if this body's reader asks.
    memory: Option<Arc<dyn MessageMemory>>,
    /// The grant a large message waits for.
    reserving: Option<Reserving>,
    /// Bytes of a frame the framer has not taken yet (they follow a message waiting
    /// for memory).
    pending: Bytes,
}

impl<B> FramedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Messages of `body` of at most `max_message_size` bytes; large ones gathered in
    /// buffers of `buffers`.
    pub fn new(body: B, max_message_size: usize, buffers: Arc<BufferPool>) -> Self {
        Self {
            body,
            framer: MessageFramer::new(max_message_size, buffers),
            done: VecDeque::new(),
            broken: None,
            memory: None,
            reserving: None,
            pending: Bytes::new(),
        }
    }

    /// Gathers each large message only once `memory` grants it room.
    pub fn with_memory(mut self, memory: Arc<dyn MessageMemory>) -> Self {
        self.framer.ask_for_memory();
        self.memory = Some(memory);
        self
    }

    /// A lower limit for the first message only.
    pub fn limit_first_message(mut self, max: usize) -> Self {
        self.framer.limit_first_message(max);
        self
    }

    /// Bytes of a begun message not yet received.
    pub fn missing(&self) -> usize {
        self.framer.missing()
    }

    /// The next event; after any but `Message`, do not poll again.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<BodyEvent<B::Error>> {
        loop {
            if let Some(message) = self.done.pop_front() {
                return Poll::Ready(BodyEvent::Message(message));
            }
            if let Some(error) = self.broken.take() {
                return Poll::Ready(BodyEvent::Broken(error));
            }
            if let (Some(len), Some(memory)) = (self.framer.awaiting_memory(), &self.memory) {
                // The body is not read meanwhile: flow control holds the sender back.
                let reserving = self.reserving.get_or_insert_with(|| memory.reserve(len));
                let granted = ready!(reserving.as_mut().poll(cx));
                self.reserving = None;
                match granted {
                    Ok(hold) => self.framer.grant(hold),
                    Err(refused) => return Poll::Ready(BodyEvent::Refused(refused)),
                }
            }
            if !self.pending.is_empty() {
                let data = std::mem::take(&mut self.pending);
                self.take_in(data);
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.take_in(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Poll::Ready(BodyEvent::Trailers(trailers));
                        }
                    }
                },
                Some(Err(error)) => return Poll::Ready(BodyEvent::Failed(error)),
                None => {
                    return Poll::Ready(BodyEvent::End {
                        missing: self.framer.missing(),
                    });
                }
            }
        }
    }

    /// Frames `data`, keeping what the framer leaves for after a grant of memory.
    fn take_in(&mut self, data: Bytes) {
        match self.framer.push(data, &mut self.done) {
            Ok(rest) => self.pending = rest,
            Err(error) => self.broken = Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aligned::DEFAULT_POOL_BYTES;
    use http_body::Frame;

    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn events(frames: Vec<Result<Frame<Bytes>, &'static str>>) -> Vec<String> {
        let mut body = FramedBody::new(
            Frames(frames.into()),
            1 << 20,
            BufferPool::new(DEFAULT_POOL_BYTES),
        );
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut seen = Vec::new();
        loop {
            let Poll::Ready(event) = body.poll_event(&mut cx) else {
                panic!("a body of ready frames is never pending");
            };
            let last = !matches!(event, BodyEvent::Message(_));
            seen.push(match event {
                BodyEvent::Message(m) => format!("message {m:?}"),
                BodyEvent::Trailers(t) => format!("trailers {}", t.len()),
                BodyEvent::Broken(e) => format!("broken: {e}"),
                BodyEvent::Refused(e) => format!("refused: {e}"),
                BodyEvent::Failed(e) => format!("failed: {e}"),
                BodyEvent::End { missing } => format!("end, {missing} missing"),
            });
            if last {
                return seen;
            }
        }
    }

    fn data(bytes: &'static [u8]) -> Result<Frame<Bytes>, &'static str> {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    #[test]
    fn messages_then_how_the_body_ended() {
        assert_eq!(
            events(vec![data(&[0, 0, 0, 0, 1, 7, 0, 0]), data(&[0, 0, 1, 8])]),
            ["message b\"\\x07\"", "message b\"\\x08\"", "end, 0 missing"]
        );
        assert_eq!(events(vec![data(&[0, 0, 0, 0, 3, 7])]), ["end, 2 missing"]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(
            events(vec![data(&[0, 0, 0, 0, 0]), Ok(Frame::trailers(trailers))]),
            ["message b\"\"", "trailers 1"]
        );
        assert_eq!(
            events(vec![data(&[0, 0, 0, 0, 0]), Err("reset")]),
            ["message b\"\"", "failed: reset"]
        );
    }

    #[test]
    fn messages_before_broken_framing_come_first() {
        assert_eq!(
            events(vec![data(&[0, 0, 0, 0, 1, 7, 9, 0, 0, 0, 0])]),
            [
                "message b\"\\x07\"",
                "broken: protocol error: invalid compressed flag 9 (valid flags are 0 and 1)"
            ]
        );
    }

    /// Grants every message, noting the lengths asked for; refuses past `refuse_after`.
    struct Gate {
        asked: std::sync::Mutex<Vec<usize>>,
        refuse_after: usize,
    }

    impl MessageMemory for Gate {
        fn reserve(&self, len: usize) -> Reserving {
            let mut asked = self.asked.lock().unwrap();
            asked.push(len);
            let granted = asked.len() <= self.refuse_after;
            Box::pin(async move {
                if granted {
                    Ok(Box::new(()) as crate::memory::MemoryHold)
                } else {
                    Err(MemoryRefused(format!("no room for {len} bytes")))
                }
            })
        }
    }

    fn gated(stream: Vec<u8>, refuse_after: usize) -> (Vec<String>, Vec<usize>) {
        let gate = Arc::new(Gate {
            asked: Default::default(),
            refuse_after,
        });
        // Everything in one frame: the framer must stop at each large message and go on
        // with the rest of the frame once it is granted.
        let frames = vec![Ok(Frame::data(Bytes::from(stream)))];
        let mut body = FramedBody::new(
            Frames(frames.into()),
            1 << 20,
            BufferPool::new(DEFAULT_POOL_BYTES),
        )
        .with_memory(Arc::clone(&gate) as Arc<dyn MessageMemory>);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        loop {
            let Poll::Ready(event) = body.poll_event(&mut cx) else {
                panic!("a ready gate never leaves the body pending");
            };
            match event {
                BodyEvent::Message(m) => seen.push(format!("{} bytes", m.len())),
                BodyEvent::Refused(e) => {
                    seen.push(format!("refused: {e}"));
                    break;
                }
                BodyEvent::End { missing } => {
                    seen.push(format!("end, {missing} missing"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let asked = gate.asked.lock().unwrap().clone();
        (seen, asked)
    }

    fn message(len: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(len as u32).to_be_bytes());
        framed.extend(std::iter::repeat_n(3u8, len));
        framed
    }

    #[test]
    fn large_messages_are_gathered_only_once_granted_and_small_ones_ask_nothing() {
        let large = crate::framer::LARGE_MESSAGE;
        let stream = [message(10), message(large), message(20), message(large + 5)].concat();
        let (seen, asked) = gated(stream.clone(), usize::MAX);
        assert_eq!(
            seen,
            [
                "10 bytes".to_string(),
                format!("{large} bytes"),
                "20 bytes".into(),
                format!("{} bytes", large + 5),
                "end, 0 missing".into()
            ]
        );
        assert_eq!(asked, [large, large + 5]);

        // Refused, the stream ends there, after the messages before it.
        let (seen, asked) = gated(stream, 1);
        assert_eq!(
            seen,
            [
                "10 bytes".to_string(),
                format!("{large} bytes"),
                "20 bytes".into(),
                format!("refused: no room for {} bytes", large + 5)
            ]
        );
        assert_eq!(asked, [large, large + 5]);
    }
}
