//! Scenarios with real processes, each in a process of its own.
//!
//! The reaper calls `waitpid(-1)`, which would steal the children of any
//! other test running in the same test binary. So every scenario re-executes
//! the test binary to run just itself (`--exact`), marked by an environment
//! variable; in that child process it becomes a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, so orphans come to it as they come to PID 1)
//! and runs the reaper on a tokio runtime. The parent checks the child
//! passed and really ran the scenario.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use super::*;

const CHILD_ENV: &str = "KEELSON_SUPERVISOR_TEST";
const RAN_MARKER: &str = "keelson-supervisor-scenario-ran:";

/// Runs `body` in a fresh process of this test binary (see the module doc).
fn in_own_process<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Supervisor, tempfile::TempDir) -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (supervisor, reaper) =
                Supervisor::with_log_limits(dir.path().join("log"), test_limits()).unwrap();
            tokio::spawn(reaper.run());
            body(supervisor, dir).await;
        });
        println!("{RAN_MARKER}{name}");
        return;
    }
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let test = format!("{module}::{name}");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {test} (own process) stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "scenario {name} failed: {}",
        output.status
    );
    assert!(
        stdout.contains(&format!("{RAN_MARKER}{name}")),
        "scenario {name} did not run in the child process"
    );
}

fn test_limits() -> LogLimits {
    LogLimits {
        ring_lines: 50,
        ring_bytes: 64 * 1024,
        line_max: 100,
        file_max: 4096,
        file_keep: 2,
    }
}

fn sh(name: &str, script: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    spec.restart = RestartPolicy {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        reset_after: Duration::from_secs(10),
    };
    spec.stop_timeout = Duration::from_secs(2);
    spec
}

/// Next event of `name` satisfying `pred`, within `timeout`.
async fn next_event(
    events: &mut broadcast::Receiver<ServiceStatus>,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    tokio::time::timeout(timeout, async {
        loop {
            let status = events.recv().await.unwrap();
            if status.name == name && pred(&status) {
                return status;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {name} within {timeout:?}"))
}

fn millis_between(earlier: SystemTime, later: SystemTime) -> u128 {
    later.duration_since(earlier).unwrap().as_millis()
}

/// Children of this process that are zombies: (pid, command).
fn zombie_children() -> Vec<(i32, String)> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1] == me {
            let pid = head.split_once(" (").map_or(head, |(p, _)| p);
            zombies.push((pid.parse().unwrap_or(-1), head.to_string()));
        }
    }
    zombies
}

/// Live children of this process running `comm`.
fn children_named(comm: &str) -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            head.ends_with(&format!("({comm}"))
                && fields.len() > 1
                && fields[0] != "Z"
                && fields[1] == me
        })
        .count()
}

async fn wait_for_log(supervisor: &Supervisor, name: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !supervisor
        .logs(name, 1000)
        .unwrap()
        .iter()
        .any(|l| l.text.contains(needle))
    {
        assert!(Instant::now() < deadline, "{name} never logged {needle:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn restarts_with_growing_backoff_and_reports_exit_code_and_signal() {
    in_own_process(
        "restarts_with_growing_backoff_and_reports_exit_code_and_signal",
        |supervisor, _dir| async move {
            let mut events = supervisor.events();
            supervisor.start(sh("crasher", "exit 3")).unwrap();

            // Delay between going BackingOff and the next Starting:
            // 100, 200, 400 (the cap), 400 ms. (The slack absorbs a loaded
            // host; an uncapped 800 ms or a flat 100 ms still fails.)
            let mut delays = Vec::new();
            for _ in 0..4 {
                let off = next_event(&mut events, "crasher", Duration::from_secs(5), |s| {
                    s.state == ServiceState::BackingOff
                })
                .await;
                assert_eq!(off.last_exit.unwrap().reason, ExitReason::Code(3));
                assert_eq!(off.pid, None);
                let start = next_event(&mut events, "crasher", Duration::from_secs(5), |s| {
                    s.state == ServiceState::Starting
                })
                .await;
                assert!(start.pid.is_some());
                delays.push(millis_between(off.since, start.since));
            }
            for (delay, expected) in delays.iter().zip([100u128, 200, 400, 400]) {
                assert!(
                    *delay >= expected && *delay < expected + 250,
                    "delays {delays:?}, expected about 100, 200, 400, 400"
                );
            }
            let status = supervisor.status();
            assert_eq!(status[0].name, "crasher");
            assert!(status[0].restarts >= 4, "{status:?}");
            let stopped = supervisor
                .stop("crasher", Duration::from_secs(1))
                .await
                .unwrap();
            assert!(matches!(
                stopped.kind,
                StopKind::NotRunning | StopKind::Graceful
            ));

            // Killed by a signal: the signal shows, not an exit code.
            supervisor.start(sh("selfkill", "kill -KILL $$")).unwrap();
            let off = next_event(&mut events, "selfkill", Duration::from_secs(5), |s| {
                s.state == ServiceState::BackingOff
            })
            .await;
            let exit = off.last_exit.unwrap();
            assert_eq!(exit.reason, ExitReason::Signal(9));
            assert_eq!(exit.reason.to_string(), "killed by SIGKILL");
            supervisor
                .stop("selfkill", Duration::from_secs(1))
                .await
                .unwrap();

            // A run longer than reset_after resets the delay to the initial
            // one (without the reset the third delay would be 400 ms).
            let mut stable = sh("stable", "sleep 0.3; exit 1");
            stable.restart.reset_after = Duration::from_millis(200);
            supervisor.start(stable).unwrap();
            for _ in 0..3 {
                let off = next_event(&mut events, "stable", Duration::from_secs(5), |s| {
                    s.state == ServiceState::BackingOff
                })
                .await;
                let start = next_event(&mut events, "stable", Duration::from_secs(5), |s| {
                    s.state == ServiceState::Starting
                })
                .await;
                let delay = millis_between(off.since, start.since);
                assert!(
                    (100..350).contains(&delay),
                    "delay {delay} ms after a stable run"
                );
            }
            supervisor
                .stop("stable", Duration::from_secs(1))
                .await
                .unwrap();
        },
    );
}

#[test]
fn stop_escalates_to_sigkill_and_stopped_services_stay_stopped() {
    in_own_process(
        "stop_escalates_to_sigkill_and_stopped_services_stay_stopped",
        |supervisor, _dir| async move {
            // `trap "" TERM` is inherited by its `sleep` children too.
            let stubborn = "trap '' TERM; echo armed; while :; do sleep 0.05; done";
            let polite = "trap 'exit 0' TERM; echo armed; while :; do sleep 0.05; done";
            supervisor.start(sh("stubborn", stubborn)).unwrap();
            supervisor.start(sh("polite", polite)).unwrap();
            supervisor.start(sh("other", polite)).unwrap();
            for name in ["stubborn", "polite", "other"] {
                wait_for_log(&supervisor, name, "armed").await;
            }

            let outcome = supervisor
                .stop("stubborn", Duration::from_millis(300))
                .await
                .unwrap();
            assert_eq!(outcome.kind, StopKind::Killed, "{outcome:?}");
            assert_eq!(outcome.exit, Some(ExitReason::Signal(9)));
            assert!(outcome.took >= Duration::from_millis(300), "{outcome:?}");

            // stop_all: named order first, then the rest in reverse start order.
            let outcomes = supervisor
                .stop_all(&["polite", "no-such-service"], Duration::from_secs(2))
                .await;
            let summary: Vec<(&str, StopKind)> =
                outcomes.iter().map(|o| (o.name.as_str(), o.kind)).collect();
            assert_eq!(
                summary,
                [
                    ("polite", StopKind::Graceful),
                    ("other", StopKind::Graceful),
                    ("stubborn", StopKind::NotRunning)
                ]
            );
            assert_eq!(outcomes[0].exit, Some(ExitReason::Code(0)));

            // Nothing comes back by itself.
            tokio::time::sleep(Duration::from_millis(700)).await;
            for status in supervisor.status() {
                assert_eq!(status.state, ServiceState::Stopped, "{status:?}");
                assert_eq!(status.pid, None);
            }
            assert!(zombie_children().is_empty(), "{:?}", zombie_children());

            // A stopped service starts again on request.
            supervisor.restart("polite").await.unwrap();
            supervisor
                .wait_ready("polite", Duration::from_secs(5))
                .await
                .unwrap();
            let err = supervisor.start(sh("polite", polite)).unwrap_err();
            assert!(err.to_string().contains("already supervised"), "{err}");
            supervisor
                .stop("polite", Duration::from_secs(2))
                .await
                .unwrap();
        },
    );
}

#[test]
fn orphans_are_reaped_and_no_exit_is_lost() {
    in_own_process(
        "orphans_are_reaped_and_no_exit_is_lost",
        |supervisor, _dir| async move {
            // A service that double-forks: its `sleep` leaves the service's
            // session and is re-parented to us when `sh` exits. It restarts
            // every 100-400 ms, making orphans and exits all along.
            supervisor
                .start(sh("forker", "setsid sleep 0.3 & sleep 0.1; exit 0"))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while children_named("sleep") == 0 {
                assert!(Instant::now() < deadline, "no orphan was re-parented to us");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            // 200 one-shots at once, while the service keeps exiting: every
            // one gets its own status and output.
            let mut tasks = Vec::new();
            for i in 0..200u32 {
                let supervisor = supervisor.clone();
                tasks.push(tokio::spawn(async move {
                    let code = (i % 7).to_string();
                    let output = if i % 2 == 0 {
                        supervisor
                            .run_oneshot(
                                &[
                                    "/bin/sh",
                                    "-c",
                                    "echo out $1; echo err $1 >&2; exit $2",
                                    "sh",
                                    &i.to_string(),
                                    &code,
                                ],
                                &[],
                                Duration::from_secs(30),
                            )
                            .await
                            .unwrap()
                    } else {
                        let program = if i % 4 == 1 {
                            "/bin/true"
                        } else {
                            "/bin/false"
                        };
                        supervisor
                            .run_oneshot(&[program], &[], Duration::from_secs(30))
                            .await
                            .unwrap()
                    };
                    (i, output)
                }));
            }
            for task in tasks {
                let (i, output) = task.await.unwrap();
                if i % 2 == 0 {
                    assert_eq!(output.status, ExitReason::Code((i % 7) as i32), "#{i}");
                    assert_eq!(
                        String::from_utf8_lossy(&output.stdout),
                        format!("out {i}\n")
                    );
                    assert_eq!(
                        String::from_utf8_lossy(&output.stderr),
                        format!("err {i}\n")
                    );
                } else if i % 4 == 1 {
                    assert_eq!(output.status, ExitReason::Code(0), "#{i}");
                } else {
                    assert_eq!(output.status, ExitReason::Code(1), "#{i}");
                }
            }

            // A one-shot that hangs is killed at its timeout, and reaped.
            let started = Instant::now();
            let err = supervisor
                .run_oneshot(&["/bin/sleep", "10"], &[], Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(err, OneshotError::TimedOut { .. }), "{err}");
            assert!(started.elapsed() < Duration::from_secs(3));
            let err = supervisor
                .run_oneshot(&["/nonexistent/e2fsck"], &[], Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("No such file or directory"),
                "{err}"
            );

            supervisor
                .stop("forker", Duration::from_secs(2))
                .await
                .unwrap();
            // Let the last orphans finish their 0.3 s sleep.
            let deadline = Instant::now() + Duration::from_secs(5);
            while children_named("sleep") > 0 {
                assert!(Instant::now() < deadline, "orphans still running");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                zombie_children().is_empty(),
                "zombies left: {:?}",
                zombie_children()
            );
            assert!(supervisor.status()[0].restarts >= 1);
            // Every registration was answered: none is left waiting.
            assert_eq!(supervisor.inner.registry.pending(), 0);
        },
    );
}

#[test]
fn logs_are_kept_in_the_ring_and_the_rotated_file() {
    in_own_process(
        "logs_are_kept_in_the_ring_and_the_rotated_file",
        |supervisor, dir| async move {
            let long = "x".repeat(150);
            let script = format!(
                "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); done; \
                 sleep 0.2; echo oops >&2; sleep 0.2; echo {long}; echo done; exec sleep 100"
            );
            supervisor.start(sh("chatty", &script)).unwrap();
            wait_for_log(&supervisor, "chatty", "done").await;
            wait_for_log(&supervisor, "chatty", "oops").await;

            // Ring: the last 50 lines; each stream in order. (The two pipes
            // are read independently, so they interleave as they arrive: the
            // script pauses around its stderr line to make that order sure.)
            let lines = supervisor.logs("chatty", 1000).unwrap();
            assert_eq!(lines.len(), 50);
            let stdout: Vec<&str> = lines
                .iter()
                .filter(|l| l.stream == LogStream::Stdout)
                .map(|l| l.text.as_str())
                .collect();
            let stderr: Vec<&str> = lines
                .iter()
                .filter(|l| l.stream == LogStream::Stderr)
                .map(|l| l.text.as_str())
                .collect();
            assert_eq!(stderr, ["oops"]);
            assert_eq!(stdout[0], "line 253");
            let expected_end = format!("{} …[truncated 50 bytes]", "x".repeat(100));
            assert_eq!(stdout[46..], ["line 299", expected_end.as_str(), "done"]);
            assert_eq!(supervisor.logs("chatty", 3).unwrap().len(), 3);

            // File: rotated at 4096 bytes, two old files kept.
            let log_dir = dir.path().join("log");
            let read = |name: &str| std::fs::read_to_string(log_dir.join(name)).unwrap();
            let current = read("chatty.log");
            let rotated = [read("chatty.log.1"), read("chatty.log.2")];
            assert!(!log_dir.join("chatty.log.3").exists());
            for file in rotated.iter().chain([&current]) {
                assert!(file.len() <= 4096, "{}", file.len());
            }
            assert!(
                rotated[0].len() > 4000,
                "rotated too early: {}",
                rotated[0].len()
            );
            // Together the three files hold a contiguous end of the output.
            let all = format!("{}{}{current}", rotated[1], rotated[0]);
            let texts: Vec<&str> = all.lines().map(|l| l.split_once(' ').unwrap().1).collect();
            let first: usize = texts[0].trim_start_matches("stdout line ").parse().unwrap();
            let mut expected: Vec<String> =
                (first..300).map(|i| format!("stdout line {i}")).collect();
            expected.extend([
                "stderr oops".to_string(),
                format!("stdout {} …[truncated 50 bytes]", "x".repeat(100)),
                "stdout done".to_string(),
            ]);
            assert_eq!(texts, expected);
            assert!(first > 0 && first < 200, "{first}");
            // Follow: the tail, then the lines of the next run.
            let (tail, mut follow) = supervisor.follow_logs("chatty", 2).unwrap();
            assert!(tail.iter().any(|l| l.text == "done"), "{tail:?}");
            supervisor.restart("chatty").await.unwrap();
            let next = tokio::time::timeout(Duration::from_secs(5), follow.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(next.text, "line 0");
            supervisor
                .stop("chatty", Duration::from_secs(2))
                .await
                .unwrap();
        },
    );
}

#[test]
fn readiness_gates_running_and_missing_binaries_fail_with_the_cause() {
    in_own_process(
        "readiness_gates_running_and_missing_binaries_fail_with_the_cause",
        |supervisor, dir| async move {
            // The log directory cannot be made (a file is in the way): the
            // services run and keep their output in memory.
            std::fs::write(dir.path().join("log"), "").unwrap();

            // Unix socket: Starting until something listens.
            let socket = dir.path().join("svc.sock");
            let mut spec = sh("sock", "echo hello; exec sleep 100");
            spec.readiness = Readiness::UnixSocket(socket.clone());
            let handle = supervisor.start(spec).unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(handle.status().state, ServiceState::Starting);
            assert!(handle.wait_ready(Duration::from_millis(100)).await.is_err());
            let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let bound = Instant::now();
            handle.wait_ready(Duration::from_secs(5)).await.unwrap();
            assert!(bound.elapsed() < Duration::from_secs(2));
            assert_eq!(handle.status().state, ServiceState::Running);
            assert_eq!(handle.status().restarts, 0);
            wait_for_log(&supervisor, "sock", "hello").await;

            // Custom probe, and a readiness timeout that restarts.
            let ready = Arc::new(AtomicBool::new(false));
            let flag = ready.clone();
            let mut spec = sh("custom", "exec sleep 100");
            spec.readiness = Readiness::custom(move || {
                let flag = flag.clone();
                async move {
                    if flag.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err("CRI not answering".to_string())
                    }
                }
            });
            spec.readiness_timeout = Duration::from_millis(300);
            let mut events = supervisor.events();
            supervisor.start(spec).unwrap();
            let off = next_event(&mut events, "custom", Duration::from_secs(5), |s| {
                s.state == ServiceState::BackingOff
            })
            .await;
            let error = off.last_error.unwrap();
            assert!(
                error.contains("not ready within") && error.contains("CRI not answering"),
                "{error}"
            );
            let err = supervisor
                .wait_ready("custom", Duration::from_millis(50))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("CRI not answering"), "{err}");
            ready.store(true, Ordering::SeqCst);
            supervisor
                .wait_ready("custom", Duration::from_secs(5))
                .await
                .unwrap();
            assert!(supervisor.status()[1].restarts >= 1);

            // Missing binary: Failed with the cause, retried at the cap.
            let mut spec = ServiceSpec::new("ghost", vec!["/nonexistent/kubelet".into()]);
            spec.restart.backoff_initial = Duration::from_millis(50);
            spec.restart.backoff_max = Duration::from_millis(100);
            supervisor.start(spec).unwrap();
            let failed = next_event(&mut events, "ghost", Duration::from_secs(5), |s| {
                s.state == ServiceState::Failed
            })
            .await;
            let cause = failed.last_error.unwrap();
            assert!(cause.contains("/nonexistent/kubelet"), "{cause}");
            assert!(cause.contains("No such file or directory"), "{cause}");
            let again = next_event(&mut events, "ghost", Duration::from_secs(5), |s| {
                s.state == ServiceState::Failed
            })
            .await;
            assert!(again.restarts > failed.restarts);
            let err = supervisor
                .wait_ready("ghost", Duration::from_millis(200))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("state failed") && err.contains("No such file"),
                "{err}"
            );

            let outcomes = supervisor.stop_all(&[], Duration::from_secs(2)).await;
            let kinds: Vec<(&str, StopKind)> =
                outcomes.iter().map(|o| (o.name.as_str(), o.kind)).collect();
            assert_eq!(
                kinds,
                [
                    ("ghost", StopKind::NotRunning),
                    ("custom", StopKind::Graceful),
                    ("sock", StopKind::Graceful)
                ]
            );
            let err = supervisor
                .stop("nope", Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "no service named \"nope\"");
        },
    );
}
