//! `zd-retention sandbox`: the fake Zendesk on loopback.

use std::process::ExitCode;

use super::args::SandboxArgs;
use super::common::shutdown_signal;
use crate::sandbox::{Faults, Sandbox, SandboxAuth, SandboxLimits, SandboxOptions};

pub(super) async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if !(args.time_scale > 0.0 && args.time_scale.is_finite()) {
        anyhow::bail!(
            "--time-scale must be a positive number, got {}",
            args.time_scale
        );
    }
    for (name, share) in [
        ("--fault-5xx", args.fault_5xx),
        ("--fault-429", args.fault_429),
        ("--fault-slow", args.fault_slow),
        ("--fault-drop", args.fault_drop),
        ("--fault-malformed", args.fault_malformed),
        ("--fault-job-fail", args.fault_job_fail),
        ("--fault-job-kill", args.fault_job_kill),
        ("--fault-job-vanish", args.fault_job_vanish),
    ] {
        if !(0.0..=1.0).contains(&share) {
            anyhow::bail!("{name} is a share between 0 and 1, got {share}");
        }
    }
    let options = SandboxOptions {
        tickets: args.tickets,
        seed: args.seed,
        time_scale: args.time_scale,
        job_delay: args.job_delay,
        job_ttl: args.job_ttl,
        max_jobs: args.max_jobs,
        limits: SandboxLimits {
            account: args.account_limit,
            ..SandboxLimits::default()
        },
        faults: Faults {
            server_errors: args.fault_5xx,
            rate_limits: args.fault_429,
            slow: args.fault_slow,
            slow_delay: args.slow_delay,
            drops: args.fault_drop,
            malformed: args.fault_malformed,
            job_failures: args.fault_job_fail,
            job_kills: args.fault_job_kill,
            job_vanish: args.fault_job_vanish,
            reject_auth_after: args.reject_auth_after,
            endpoints: Vec::new(),
        },
        auth: args.token.map_or(SandboxAuth::AnyToken, SandboxAuth::Token),
        cursor_sort: args.cursor_sort,
        churn: args.churn,
        agents_every: args.agents_every,
        scrub_after: args.scrub_after,
        strict_job_ids: args.strict_job_ids,
        ..SandboxOptions::default()
    };
    if !(args.churn >= 0.0 && args.churn.is_finite()) {
        anyhow::bail!(
            "--churn is a number of agent actions per listing request, 0 or more, got {}",
            args.churn
        );
    }
    let sandbox = Sandbox::start(options, args.listen).await?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the sandbox listens beyond loopback, as asked");
    }
    eprintln!(
        "sandbox: {} soft-deleted tickets at {} (time scale {}); Ctrl-C to stop",
        args.tickets,
        sandbox.base_url(),
        args.time_scale
    );
    eprintln!(
        "try: curl -u 'a@b.c/token:x' '{}/api/v2/deleted_tickets.json?page[size]=100'",
        sandbox.base_url()
    );
    shutdown_signal().await;
    let counts = sandbox.request_counts();
    eprintln!("sandbox: requests served (endpoint: status=count):");
    for (endpoint, by_status) in counts {
        let parts: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}={n}")).collect();
        eprintln!("  {endpoint}: {}", parts.join(" "));
    }
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
