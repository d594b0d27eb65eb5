//! An HTTP/2 body read as gRPC messages: what both ends of a bulk call do with the
//! body they receive (the server with an upload's requests, the client with a
//! download's or an upload's responses).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;

use crate::framer::{FramingError, MessageFramer};

/// The next thing a body of gRPC messages holds.
#[derive(Debug)]
pub enum BodyEvent<E> {
    /// One whole message, not yet decoded.
    Message(Bytes),
    /// The body's trailers; it ends after them.
    Trailers(HeaderMap),
    /// The framing broke here; the messages before it came first. Nothing follows.
    Broken(FramingError),
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
}

impl<B> FramedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    pub fn new(body: B, max_message_size: usize) -> Self {
        Self {
            body,
            framer: MessageFramer::new(max_message_size),
            done: VecDeque::new(),
            broken: None,
        }
    }

    /// Bytes of a begun message not yet received.
    pub fn missing(&self) -> usize {
        self.framer.missing()
    }

    /// The next event; after `Trailers`, `Broken`, `Failed` or `End`, do not poll again.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<BodyEvent<B::Error>> {
        loop {
            if let Some(message) = self.done.pop_front() {
                return Poll::Ready(BodyEvent::Message(message));
            }
            if let Some(error) = self.broken.take() {
                return Poll::Ready(BodyEvent::Broken(error));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(error) = self.framer.push(data, &mut self.done) {
                            self.broken = Some(error);
                        }
                    }
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut body = FramedBody::new(Frames(frames.into()), 1 << 20);
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
}
