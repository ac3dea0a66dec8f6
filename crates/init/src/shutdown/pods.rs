//! Stopping every pod through CRI while the network is still up: running
//! containers first, each with a grace period (SIGTERM, then the runtime's
//! SIGKILL), in parallel; then every sandbox (which kills what is left and
//! tears down its CNI network), in parallel. Every call is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::report::Outcome;
use crate::cri::{CriError, RuntimeClient};

/// Bound of connecting and of each list call.
const CALL_BOUND: Duration = Duration::from_secs(5);
/// The container grace period within a `budget` for the whole step: a
/// third of it (whole seconds, at least 1). A container that ignores
/// SIGTERM is common (a shell as PID 1 of its namespace ignores it); after
/// its SIGKILL the runtime still has to see the exit through the shim,
/// which takes seconds on a loaded machine (measured under TCG: 2-5 s), and
/// the sandboxes need their CNI teardown: both get the rest.
pub(crate) fn grace_period(budget: Duration) -> Duration {
    Duration::from_secs((budget.as_secs() / 3).max(1))
}

/// The part of the budget kept for stopping the sandboxes.
fn sandbox_reserve(budget: Duration) -> Duration {
    budget / 4
}

/// Tally of one kind of call.
#[derive(Default)]
struct Tally {
    asked: usize,
    done: usize,
    slow: usize,
    timed_out: usize,
    errors: Vec<String>,
}

impl Tally {
    /// Counts one stop call; one that took `slow_after` or more ended by
    /// the runtime's SIGKILL.
    fn add(&mut self, r: Result<Duration, CriError>, slow_after: Option<Duration>) {
        self.asked += 1;
        match r {
            Ok(took) => {
                self.done += 1;
                if slow_after.is_some_and(|g| took >= g) {
                    self.slow += 1;
                }
            }
            Err(e) => self.error(e),
        }
    }

    /// Counts a failed call (a stop or the list before them).
    fn error(&mut self, e: CriError) {
        match e {
            CriError::Timeout { .. } => self.timed_out += 1,
            e => self.errors.push(e.to_string()),
        }
    }
}

/// Stops every container and sandbox of the runtime at `socket` within
/// `budget`.
pub(crate) async fn stop_all(socket: &Path, budget: Duration) -> (Outcome, String) {
    if !socket.exists() {
        return (
            Outcome::Skipped,
            format!("no CRI socket at {}", socket.display()),
        );
    }
    let start = Instant::now();
    let left = || budget.saturating_sub(start.elapsed());
    let client = match RuntimeClient::connect(socket, CALL_BOUND.min(budget)).await {
        Ok(c) => c,
        Err(e) => return (Outcome::Failed, format!("CRI unreachable: {e}")),
    };

    // Containers, gracefully.
    let grace = grace_period(budget);
    let mut containers = Tally::default();
    match client.list_containers(CALL_BOUND.min(left())).await {
        Ok(list) => {
            let running: Vec<_> = list.into_iter().filter(|c| c.running()).collect();
            let bound = left().saturating_sub(sandbox_reserve(budget));
            let calls = running.iter().map(|c| {
                let client = client.clone();
                async move {
                    let t = Instant::now();
                    let r = client
                        .stop_container(&c.id, grace.as_secs() as i64, bound)
                        .await;
                    tracing::info!(container = %c.id, sandbox = %c.pod_sandbox_id,
                        name = %c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
                        took_ms = t.elapsed().as_millis() as u64, ok = r.is_ok(), "container stopped");
                    r.map(|()| t.elapsed())
                }
            });
            for r in join_all(calls).await {
                containers.add(r, Some(grace));
            }
        }
        Err(e) => containers.error(e),
    }

    // Sandboxes: network teardown and whatever is left.
    let mut sandboxes = Tally::default();
    match client.list_pod_sandboxes(CALL_BOUND.min(left())).await {
        Ok(list) => {
            let bound = left().max(Duration::from_secs(1));
            let calls = list.iter().map(|s| {
                let client = client.clone();
                async move {
                    let t = Instant::now();
                    let r = client.stop_pod_sandbox(&s.id, bound).await;
                    tracing::info!(sandbox = %s.id, pod = %s.describe(),
                        took_ms = t.elapsed().as_millis() as u64, ok = r.is_ok(), "pod sandbox stopped");
                    r.map(|()| t.elapsed())
                }
            });
            for r in join_all(calls).await {
                sandboxes.add(r, None);
            }
        }
        Err(e) => sandboxes.error(e),
    }

    let mut detail = format!(
        "containers stopped {}/{} (grace {}s, {} killed at its end), sandboxes stopped {}/{}",
        containers.done,
        containers.asked,
        grace.as_secs(),
        containers.slow,
        sandboxes.done,
        sandboxes.asked
    );
    let timed_out = containers.timed_out + sandboxes.timed_out;
    if timed_out > 0 {
        detail.push_str(&format!(", {timed_out} call(s) timed out"));
    }
    let errors: Vec<&String> = containers.errors.iter().chain(&sandboxes.errors).collect();
    if let Some(first) = errors.first() {
        detail.push_str(&format!(", {} error(s), first: {first}", errors.len()));
    }
    let outcome = if timed_out > 0 {
        Outcome::TimedOut
    } else if !errors.is_empty() {
        Outcome::Failed
    } else if containers.slow > 0 {
        Outcome::Forced
    } else {
        Outcome::Ok
    };
    (outcome, detail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_grace_period_leaves_time_to_kill_and_for_the_sandboxes() {
        assert_eq!(
            grace_period(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            sandbox_reserve(Duration::from_secs(30)),
            Duration::from_millis(7500)
        );
        assert_eq!(
            grace_period(Duration::from_millis(900)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn no_socket_means_nothing_to_stop() {
        let t = tempfile::tempdir().unwrap();
        let (o, detail) = stop_all(&t.path().join("containerd.sock"), Duration::from_secs(5)).await;
        assert_eq!(o, Outcome::Skipped);
        assert!(detail.contains("containerd.sock"), "{detail}");
    }

    #[tokio::test]
    async fn a_mute_runtime_fails_or_times_out_within_the_budget() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("mute.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let start = Instant::now();
        let (o, detail) = stop_all(&sock, Duration::from_secs(2)).await;
        assert!(
            matches!(o, Outcome::Failed | Outcome::TimedOut),
            "{o} {detail}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "{:?}",
            start.elapsed()
        );
    }

    /// A CRI runtime service in memory (containerd cannot run here): it
    /// records the calls; a container named "stubborn" takes the whole
    /// grace period to stop, as one ignoring SIGTERM would.
    mod fake {
        use crate::cri::*;
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};
        use std::task::{Context, Poll};
        use std::time::Duration;
        use tonic::body::Body;
        use tonic::codegen::http;

        #[derive(Clone, Default)]
        pub struct Cri {
            pub calls: Arc<Mutex<Vec<String>>>,
        }

        impl tonic::server::NamedService for Cri {
            const NAME: &'static str = "runtime.v1alpha2.RuntimeService";
        }

        type Fut = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>,
        >;

        fn unary<Req, Resp, F, Fu>(req: http::Request<Body>, f: F) -> Fut
        where
            Req: prost::Message + Default + Send + 'static,
            Resp: prost::Message + Send + 'static,
            F: FnOnce(Req) -> Fu + Clone + Send + 'static,
            Fu: std::future::Future<Output = Resp> + Send + 'static,
        {
            let svc = tower::service_fn(move |r: tonic::Request<Req>| {
                let f = f.clone();
                async move { Ok::<_, tonic::Status>(tonic::Response::new(f(r.into_inner()).await)) }
            });
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
            Box::pin(async move { Ok(grpc.unary(svc, req).await) })
        }

        fn container(id: &str, name: &str, state: ContainerState) -> Container {
            Container {
                id: id.into(),
                pod_sandbox_id: "sb-1".into(),
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                state: state as i32,
            }
        }

        impl tower::Service<http::Request<Body>> for Cri {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = Fut;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: http::Request<Body>) -> Fut {
                let calls = self.calls.clone();
                let method = req
                    .uri()
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                match method.as_str() {
                    "ListContainers" => unary(req, |_: ListContainersRequest| async {
                        ListContainersResponse {
                            containers: vec![
                                container("c-web", "web", ContainerState::Running),
                                container("c-stubborn", "stubborn", ContainerState::Running),
                                container("c-done", "done", ContainerState::Exited),
                            ],
                        }
                    }),
                    "StopContainer" => unary(req, move |r: StopContainerRequest| async move {
                        calls
                            .lock()
                            .unwrap()
                            .push(format!("StopContainer {} {}", r.container_id, r.timeout));
                        if r.container_id == "c-stubborn" {
                            tokio::time::sleep(Duration::from_secs(r.timeout as u64)).await;
                        }
                        StopContainerResponse {}
                    }),
                    "ListPodSandbox" => unary(req, |_: ListPodSandboxRequest| async {
                        ListPodSandboxResponse {
                            items: vec![
                                PodSandbox {
                                    id: "sb-1".into(),
                                    metadata: None,
                                    state: PodSandboxState::Ready as i32,
                                },
                                PodSandbox {
                                    id: "sb-2".into(),
                                    metadata: None,
                                    state: PodSandboxState::NotReady as i32,
                                },
                            ],
                        }
                    }),
                    "StopPodSandbox" => unary(req, move |r: StopPodSandboxRequest| async move {
                        calls
                            .lock()
                            .unwrap()
                            .push(format!("StopPodSandbox {}", r.pod_sandbox_id));
                        StopPodSandboxResponse {}
                    }),
                    _ => Box::pin(
                        async move { Ok(tonic::Status::unimplemented(method).into_http()) },
                    ),
                }
            }
        }
    }

    #[tokio::test]
    async fn running_containers_then_every_sandbox_are_stopped_and_a_slow_one_counts_as_forced() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("containerd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let cri = fake::Cri::default();
        let calls = cri.calls.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(cri)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let start = Instant::now();
        // A 6 s budget: grace 2 s for the containers.
        let (outcome, detail) = stop_all(&sock, Duration::from_secs(6)).await;
        let took = start.elapsed();
        assert_eq!(outcome, Outcome::Forced, "{detail}");
        assert!(
            detail.contains("containers stopped 2/2 (grace 2s, 1 killed"),
            "{detail}"
        );
        assert!(detail.contains("sandboxes stopped 2/2"), "{detail}");
        assert!(took < Duration::from_secs(6), "within the budget: {took:?}");
        let mut calls = calls.lock().unwrap().clone();
        // Containers (in parallel) strictly before sandboxes.
        assert_eq!(calls.len(), 4, "{calls:?}");
        let (containers, sandboxes) = calls.split_at_mut(2);
        containers.sort();
        sandboxes.sort();
        assert_eq!(
            containers,
            ["StopContainer c-stubborn 2", "StopContainer c-web 2"]
        );
        assert_eq!(sandboxes, ["StopPodSandbox sb-1", "StopPodSandbox sb-2"]);
    }
}
