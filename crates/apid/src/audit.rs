//! The audit line: one `tracing` event per call, written when the call ends
//! (for streams: when the last message and trailers went out, or the
//! client went away), with the gRPC status the client saw.
//!
//! `audit method=Version client_cn=admin role=os:admin peer=127.0.0.1:5555
//! outcome=ok code=Ok took_ms=2`

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::identity::Caller;

/// What is known about one call until its audit line is written.
pub struct AuditRecord {
    method: String,
    client_cn: String,
    role: &'static str,
    peer: SocketAddr,
    started: Instant,
    denied_by_apid: bool,
    code: Option<Code>,
    logged: bool,
}

impl AuditRecord {
    /// Starts the record of a call to `method` (the method name, or the
    /// raw path for an unknown one).
    pub fn start(method: &str, caller: &Caller, peer: SocketAddr) -> AuditRecord {
        AuditRecord {
            method: method.to_owned(),
            client_cn: caller.cn().to_owned(),
            role: caller.role_label(),
            peer,
            started: Instant::now(),
            denied_by_apid: false,
            code: None,
            logged: false,
        }
    }

    /// Marks the call as refused by apid itself (role or maintenance).
    pub fn mark_denied(&mut self) {
        self.denied_by_apid = true;
    }

    fn observe(&mut self, headers: &HeaderMap) {
        if let Some(v) = headers.get("grpc-status") {
            self.code = Some(Code::from_bytes(v.as_bytes()));
        }
    }

    fn write(&mut self, ended: bool) {
        if self.logged {
            return;
        }
        self.logged = true;
        let (outcome, code) = match (self.code, ended) {
            (Some(Code::Ok), _) => ("ok", Code::Ok),
            (Some(code), _) if self.denied_by_apid => ("denied", code),
            (Some(code), _) => ("error", code),
            // The stream ended without a grpc-status: a broken upstream.
            (None, true) => ("error", Code::Unknown),
            // Dropped before the end: the client went away.
            (None, false) => ("cancelled", Code::Cancelled),
        };
        tracing::info!(
            method = %self.method,
            client_cn = %self.client_cn,
            role = %self.role,
            peer = %self.peer,
            outcome = %outcome,
            code = ?code,
            took_ms = self.started.elapsed().as_millis() as u64,
            "audit"
        );
    }
}

/// A response body that writes the call's audit line when it ends.
pub struct AuditBody {
    inner: tonic::body::Body,
    record: AuditRecord,
}

impl AuditBody {
    /// Wraps `response`, taking a trailers-only status from its headers.
    pub fn wrap(
        response: http::Response<tonic::body::Body>,
        mut record: AuditRecord,
    ) -> http::Response<AuditBody> {
        record.observe(response.headers());
        response.map(|inner| AuditBody { inner, record })
    }
}

impl Body for AuditBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.record.observe(trailers);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.record.code = Some(status.code());
                this.record.write(true);
            }
            Poll::Ready(None) => this.record.write(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditBody {
    fn drop(&mut self) {
        // A trailers-only answer may never be polled: its status is known.
        let ended = self.record.code.is_some();
        self.record.write(ended);
    }
}
