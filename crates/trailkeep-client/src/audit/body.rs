//! Body wrappers: a request body that was (partly) read ahead to learn the verb or capture it, and
//! a response body that captures what it streams and emits the event when it ends.
//!
//! Owns: forwarding every byte and trailer unchanged, in order. Must never: hold more than the
//! configured limit of captured bytes, or emit an event twice (the pending event is taken out on
//! the first of end of stream, error, or drop).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// What reading ahead found.
pub(crate) struct ReadAhead<E> {
    /// The bytes read (all of the body when `complete`).
    pub data: Bytes,
    /// Whether the whole body was read (and was within the limit).
    pub complete: bool,
    /// Trailers, when the body ended with them.
    pub trailers: Option<HeaderMap>,
    /// An error the body returned while reading ahead; handed to the service when it reads.
    pub error: Option<E>,
}

/// Reads `body` until it ends or more than `limit` bytes were read.
pub(crate) async fn read_ahead<B>(body: &mut Pin<Box<B>>, limit: usize) -> ReadAhead<B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut buf = BytesMut::new();
    let mut out = ReadAhead {
        data: Bytes::new(),
        complete: false,
        trailers: None,
        error: None,
    };
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        match frame {
            None => {
                out.complete = true;
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        break;
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        out.trailers = Some(t);
                    }
                    out.complete = true;
                    break;
                }
            },
            Some(Err(e)) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out.data = buf.freeze();
    out
}

pin_project! {
    /// The request body the wrapped service receives: the original, or what was read ahead
    /// followed by the rest.
    pub struct RequestBody<B: Body> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B: Body> {
        Passthrough { #[pin] body: B },
        ReadAhead {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
            error: Option<B::Error>,
            // `None` once the original body has ended.
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestBody")
    }
}

impl<B: Body<Data = Bytes>> RequestBody<B> {
    /// The original body, untouched.
    pub(crate) fn passthrough(body: B) -> Self {
        RequestBody {
            inner: Inner::Passthrough { body },
        }
    }

    /// What was read ahead, then whatever `body` still has.
    pub(crate) fn read_ahead(ahead: ReadAhead<B::Error>, body: Pin<Box<B>>) -> Self {
        let done = ahead.complete || ahead.error.is_some();
        RequestBody {
            inner: Inner::ReadAhead {
                data: Some(ahead.data).filter(|d| !d.is_empty()),
                trailers: ahead.trailers,
                error: ahead.error,
                rest: if done { None } else { Some(body) },
            },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().inner.project() {
            InnerProj::Passthrough { body } => body.poll_frame(cx),
            InnerProj::ReadAhead {
                data,
                trailers,
                error,
                rest,
            } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if let Some(body) = rest {
                    let frame = ready!(body.as_mut().poll_frame(cx));
                    if frame.is_none() {
                        *rest = None;
                    }
                    return Poll::Ready(frame);
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } => body.is_end_stream(),
            Inner::ReadAhead {
                data,
                trailers,
                error,
                rest,
            } => {
                data.is_none()
                    && trailers.is_none()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } => body.size_hint(),
            Inner::ReadAhead { data, rest, .. } => {
                let ahead = data.as_ref().map_or(0, |d| d.len() as u64);
                match rest {
                    None => SizeHint::with_exact(ahead),
                    Some(b) => {
                        let h = b.size_hint();
                        let mut out = SizeHint::new();
                        out.set_lower(h.lower() + ahead);
                        if let Some(u) = h.upper() {
                            out.set_upper(u + ahead);
                        }
                        out
                    }
                }
            }
        }
    }
}

/// Called once with the captured response bytes (`None` when over the limit or not captured).
pub(crate) type Finish = Box<dyn FnOnce(Option<Bytes>) + Send>;

/// Collects up to `limit` bytes of a response body and runs the finisher exactly once.
pub(crate) struct Capture {
    buf: BytesMut,
    limit: usize,
    over: bool,
    finish: Option<Finish>,
}

impl Capture {
    pub(crate) fn new(limit: usize, finish: Finish) -> Self {
        Capture {
            buf: BytesMut::new(),
            limit,
            over: false,
            finish: Some(finish),
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.over {
            return;
        }
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            self.buf = BytesMut::new();
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn done(&mut self) {
        if let Some(f) = self.finish.take() {
            let data = if self.over {
                None
            } else {
                Some(std::mem::take(&mut self.buf).freeze())
            };
            f(data);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.done();
    }
}

pin_project! {
    /// The response body the layer returns: the service's body, captured when configured.
    pub struct ResponseBody<B> {
        #[pin]
        body: B,
        capture: Option<Capture>,
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("capturing", &self.capture.is_some())
            .finish()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        ResponseBody {
            body,
            capture: None,
        }
    }

    pub(crate) fn capturing(body: B, capture: Capture) -> Self {
        ResponseBody {
            body,
            capture: Some(capture),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if let Some(capture) = this.capture.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        capture.push(d);
                    }
                }
                Some(Err(_)) => {
                    capture.over = true;
                    capture.done();
                }
                None => capture.done(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
