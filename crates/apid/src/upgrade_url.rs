//! `UpgradeFromUrl`, the one call apid answers itself instead of
//! forwarding: it downloads the bundle (see [`crate::download`]) and streams
//! it into init's `Upgrade` as it arrives, so PID 1 never talks to the
//! network and nothing is buffered on the node.
//!
//! Order of effects: the URL and the CAs are checked, then the first GET
//! must answer 200 over a verified TLS connection; only then is `Upgrade`
//! opened on init (which starts writing the inactive slot). A download that
//! fails for good after that cancels the `Upgrade` call, and init marks the
//! half-written slot invalid, as for an upload cut short. So does the caller
//! going away (nodectl interrupted). The caller sees progress messages and,
//! last, init's answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::v1 as pb;
use api::v1::machine_client::MachineClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::download::{self, Download, DownloadError, Step};
use crate::forward::{self, Upstream};
use crate::identity::Caller;

/// The full gRPC path of the call.
pub const PATH: &str = "/keelson.machine.v1.Machine/UpgradeFromUrl";

/// Bytes per `Upgrade` message (TLS hands the body over in 16 KiB
/// records; init writes and hashes in larger steps).
const CHUNK: usize = 256 * 1024;

/// How often a progress message is sent at most (notes go at once).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What the call needs from the gateway.
#[derive(Clone)]
pub struct UrlUpgrader {
    /// init's API socket.
    pub upstream: Upstream,
    /// The node's CA bundle, trusted when the request pins no CA.
    pub system_cas: PathBuf,
}

/// Serves one `UpgradeFromUrl` request (`request` is the raw HTTP/2
/// request, already authorized).
pub async fn serve<B>(
    upgrader: UrlUpgrader,
    caller: Caller,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let codec =
        tonic_prost::ProstCodec::<pb::UpgradeFromUrlProgress, pb::UpgradeFromUrlRequest>::default();
    let mut grpc = tonic::server::Grpc::new(codec);
    grpc.server_streaming(Service { upgrader, caller }, request)
        .await
}

struct Service {
    upgrader: UrlUpgrader,
    caller: Caller,
}

type Progress = Result<pb::UpgradeFromUrlProgress, Status>;

impl tonic::server::ServerStreamingService<pb::UpgradeFromUrlRequest> for Service {
    type Response = pb::UpgradeFromUrlProgress;
    type ResponseStream = ReceiverStream<Progress>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<Self::ResponseStream>, Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<pb::UpgradeFromUrlRequest>) -> Self::Future {
        let upgrader = self.upgrader.clone();
        let caller = self.caller.clone();
        Box::pin(async move { start(upgrader, caller, request.into_inner()).await })
    }
}

/// Checks the request and opens the download; errors here change nothing.
async fn start(
    upgrader: UrlUpgrader,
    caller: Caller,
    request: pb::UpgradeFromUrlRequest,
) -> Result<tonic::Response<ReceiverStream<Progress>>, Status> {
    let url =
        download::parse_url(&request.url).map_err(|e| Status::invalid_argument(e.to_string()))?;
    // An unusable pinned CA is the caller's input; unusable system CAs are
    // the node's state.
    let tls = download::tls_config(&request.ca_pem, &upgrader.system_cas).map_err(|e| {
        if request.ca_pem.is_empty() {
            Status::failed_precondition(e.to_string())
        } else {
            Status::invalid_argument(e.to_string())
        }
    })?;
    tracing::info!(url = %url, by = caller.cn(), pinned_ca = !request.ca_pem.is_empty(), "upgrade from URL requested");
    let download = Download::start(url, tls).await.map_err(|e| {
        tracing::warn!(error = %e, "upgrade download refused before writing");
        Status::failed_precondition(format!("download: {e}; nothing was written"))
    })?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(
        upgrader.upstream,
        caller,
        download,
        request.no_reboot,
        tx,
    ));
    Ok(tonic::Response::new(ReceiverStream::new(rx)))
}

/// Drives the download into init's `Upgrade` and reports to the caller.
async fn run(
    upstream: Upstream,
    caller: Caller,
    download: Download,
    no_reboot: bool,
    progress: mpsc::Sender<Progress>,
) {
    let url = download.url().to_string();
    let total = download.total().unwrap_or(0);
    let (chunks_tx, chunks_rx) = mpsc::channel::<pb::UpgradeRequest>(4);
    let options = pb::UpgradeRequest {
        options: Some(pb::UpgradeOptions {
            size: total,
            no_reboot,
        }),
        chunk: Vec::new(),
    };
    if chunks_tx.send(options).await.is_err() {
        return;
    }
    let mut call_request = tonic::Request::new(ReceiverStream::new(chunks_rx));
    forward::stamp(call_request.metadata_mut(), &caller);
    let mut client = MachineClient::new(upstream.channel())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let call = async move { client.upgrade(call_request).await };
    tokio::pin!(call);
    let feed = feed(download, chunks_tx, progress.clone());
    tokio::pin!(feed);
    let mut fed: Option<(u64, u32)> = None;
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer,
            result = &mut feed, if fed.is_none() => match result {
                Ok(done) => fed = Some(done),
                Err(e) => {
                    // Dropping the call cancels it: init marks the slot invalid.
                    tracing::warn!(url = %url, error = %e, "upgrade download failed; upgrade cancelled");
                    let _ = progress
                        .send(Err(Status::unavailable(format!(
                            "download: {e}; the upgrade was cancelled and the slot being written is marked invalid"
                        ))))
                        .await;
                    return;
                }
            },
            () = progress.closed() => {
                tracing::warn!(url = %url, "caller went away; upgrade from URL cancelled");
                return;
            }
        }
    };
    match answer {
        Ok(reply) => {
            let (received, resumes) = fed.unwrap_or((0, 0));
            tracing::info!(url = %url, bytes = received, resumes, "upgrade from URL written");
            let _ = progress
                .send(Ok(pb::UpgradeFromUrlProgress {
                    received,
                    total,
                    resumes,
                    note: String::new(),
                    done: Some(reply.into_inner()),
                }))
                .await;
        }
        Err(status) => {
            tracing::warn!(url = %url, error = %status.message(), "the node refused the downloaded bundle");
            let _ = progress.send(Err(status)).await;
        }
    }
}

/// Hands every downloaded byte to `chunks` and reports progress; returns
/// (bytes, resumes) once the file is complete.
async fn feed(
    mut download: Download,
    chunks: mpsc::Sender<pb::UpgradeRequest>,
    progress: mpsc::Sender<Progress>,
) -> Result<(u64, u32), DownloadError> {
    let total = download.total().unwrap_or(0);
    let mut last_report = Instant::now();
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
    let report = |download: &Download, note: String| pb::UpgradeFromUrlProgress {
        received: download.received(),
        total,
        resumes: download.resumes(),
        note,
        done: None,
    };
    loop {
        match download.next().await? {
            Step::Data(bytes) => {
                pending.extend_from_slice(&bytes);
                if pending.len() < CHUNK {
                    continue;
                }
                send(&chunks, &mut pending).await;
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    // A slow caller must not slow the download: skip a tick.
                    let _ = progress.try_send(Ok(report(&download, String::new())));
                }
            }
            Step::Resumed { at, why } => {
                let note = format!("{why}; resumed at byte {at}");
                let _ = progress.send(Ok(report(&download, note))).await;
            }
            Step::End => {
                if !pending.is_empty() {
                    send(&chunks, &mut pending).await;
                }
                let _ = progress.try_send(Ok(report(&download, String::new())));
                return Ok((download.received(), download.resumes()));
            }
        }
    }
}

/// Sends the bytes gathered so far as one `Upgrade` message.
async fn send(chunks: &mpsc::Sender<pb::UpgradeRequest>, pending: &mut Vec<u8>) {
    let message = pb::UpgradeRequest {
        options: None,
        chunk: std::mem::replace(pending, Vec::with_capacity(CHUNK)),
    };
    if chunks.send(message).await.is_err() {
        // init answered (a refusal) and closed the stream: the caller gets
        // that answer, so this side just waits to be dropped.
        std::future::pending::<()>().await;
    }
}
